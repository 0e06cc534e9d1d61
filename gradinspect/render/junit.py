"""JUnit XML for `check`: one testcase per rule per gradient, which CI systems display."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from gradinspect.render.settings import RenderOptions
from gradinspect.report import CheckReport


def check(report: CheckReport, options: RenderOptions) -> str:
    failures = len(report.failures)
    root = ET.Element("testsuites", name="gradinspect", tests=str(len(report.results)), failures=str(failures))
    suite = ET.SubElement(
        root,
        "testsuite",
        name=f"gradinspect check {report.grad.model.path}",
        tests=str(len(report.results)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("model", report.grad.model.path),
        ("loss", f"{report.grad.loss_spec} = {report.grad.loss_value!r}"),
        ("inputs", f"{report.grad.input_source}, {report.grad.batches_text}"),
        ("inputs_fingerprint", report.grad.input_fingerprint or ""),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"gradinspect.{r.rule}", name=r.target)
        if not r.passed:
            failure = ET.SubElement(case, "failure", message=r.message, type=r.rule)
            failure.text = f"{r.rule} {r.target}: {r.message}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
