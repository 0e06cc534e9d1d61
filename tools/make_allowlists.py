"""Regenerate gradinspect/artifacts/data/*.txt, the allow-lists of the safety scan, from the installed TF/Keras.

Run by a developer after a TensorFlow/Keras upgrade, then review the diff by eye: every added
name becomes loadable from an untrusted file. The rules below say what may enter each list.

    python tools/make_allowlists.py
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DATA = Path(__file__).resolve().parent.parent / "gradinspect" / "artifacts" / "data"

# --- TensorFlow op types a SavedModel graph may hold -------------------------------------
# Ops generated in these modules compute on tensors in memory: math, arrays, neural-network
# kernels, linear algebra, control flow and function calls, variables, random numbers,
# TensorLists/TensorArrays (RNN loops), strings, parsing, lookup tables, sparse/ragged.
OP_MODULES = (
    "math_ops array_ops nn_ops linalg_ops control_flow_ops functional_ops resource_variable_ops random_ops "
    "stateless_random_ops stateless_random_ops_v2 stateful_random_ops bitwise_ops spectral_ops image_ops "
    "list_ops data_flow_ops sparse_ops ragged_array_ops ragged_math_ops ragged_conversion_ops string_ops "
    "cudnn_rnn_ops lookup_ops logging_ops state_ops parsing_ops set_ops candidate_sampling_ops"
).split()
# ...less those that reach outside the process or block: reading a file or memory region
# (ImmutableConst, RecordInput, table initializers from text files), calling another process
# (RemoteCall), printing or writing summaries, queues and barriers that can wait forever, and
# those that end or stall the process (Abort kills it; mutexes can deadlock).
OP_EXCLUDED = re.compile(
    r"Queue|Barrier|Summary|^Print|RecordInput|RemoteCall|ImmutableConst|FromTextFile|Accumulator"
    r"|^Stage|^Unstage|^Map|^OrderedMap|^Debug|^Abort$|Mutex"
)
OP_KEEP_IN_LOGGING = {"Assert", "Timestamp"}
OP_EXTRA = {
    "NoOp", "_Arg", "_Retval", "_DeviceArg", "_DeviceRetval", "Const", "Placeholder",
    "PlaceholderWithDefault", "Identity", "IdentityN", "VarHandleOp", "ReadVariableOp",
    "PartitionedCall", "StatefulPartitionedCall",
    # Reading the next element of an iterator passed in (Keras's saved adapt_step does): the
    # datasets that could read files are separate ops, and none of them is on the list.
    "IteratorGetNext", "IteratorGetNextSync", "IteratorGetNextAsOptional", "OptionalGetValue", "OptionalHasValue",
}  # fmt: skip


def op_types() -> list[str]:
    import tensorflow as tf

    registered = {n for n in dir(tf.raw_ops) if not n.startswith("_")}
    keep = set(OP_EXTRA)
    for name in OP_MODULES:
        module = importlib.import_module(f"tensorflow.python.ops.gen_{name}")
        for op in dir(module):
            if op not in registered or OP_EXCLUDED.search(op):
                continue
            if name == "logging_ops" and op not in OP_KEEP_IN_LOGGING:
                continue
            if name == "data_flow_ops" and not (
                op.startswith(("TensorArray", "Stack"))
                or op in ("DynamicPartition", "DynamicStitch", "ParallelDynamicStitch")
            ):
                continue
            keep.add(op)
    return sorted(keep)


# --- Keras classes and functions a config may name ----------------------------------------
KERAS_MODULES = (
    "layers initializers regularizers constraints losses metrics optimizers optimizers.schedules "
    "activations models mixed_precision dtype_policies"
).split()


# Layers whose config makes Keras open or run something outside the model file: TFSMLayer loads
# the SavedModel at a path its config names (unscanned), TorchModuleWrapper unpickles a module
# (torch.load), JaxLayer/FlaxLayer call Python functions their config carries.
KERAS_CLASSES_EXCLUDED = {"TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"}


def keras_names() -> tuple[list[str], list[str]]:
    import keras
    import tf_keras
    from keras.src.ops.operation import Operation

    classes = {"Functional", "Sequential", "Model", "Policy", "DTypePolicy", "TensorShape"}
    functions: set[str] = set()
    for lib in (keras, tf_keras):
        for sub in KERAS_MODULES:
            try:
                module = importlib.import_module(f"{lib.__name__}.{sub}")
            except ImportError:
                continue
            for name in dir(module):
                obj = getattr(module, name)
                if name.startswith("_") or inspect.ismodule(obj):
                    continue
                if inspect.isclass(obj):
                    classes.update({name, obj.__name__})
                elif sub in ("activations", "losses", "metrics") and callable(obj):
                    functions.update({name, getattr(obj, "__name__", name)})
    # Keras 3 records ops applied to symbolic tensors (keras.ops.add(x, y)) as Operation classes.
    import keras.src.ops as kops

    for info in pkgutil.iter_modules(kops.__path__):
        if info.name.endswith("_test"):
            continue
        module = importlib.import_module(f"keras.src.ops.{info.name}")
        classes.update(n for n, o in vars(module).items() if inspect.isclass(o) and issubclass(o, Operation))
    # Module helpers, not functions a config names: deserialize/serialize/get would call back into the loader.
    functions -= {"deserialize", "serialize", "get"}
    classes -= KERAS_CLASSES_EXCLUDED
    return sorted(classes), sorted(f for f in functions if f.isidentifier())


def main() -> None:
    DATA.mkdir(exist_ok=True)
    header = "# Generated by tools/make_allowlists.py from TensorFlow/Keras {}; reviewed by hand.\n"
    import keras
    import tensorflow as tf

    version = f"{tf.__version__} / Keras {keras.__version__}"
    classes, functions = keras_names()
    for name, items in (("tf_ops", op_types()), ("keras_classes", classes), ("keras_functions", functions)):
        (DATA / f"{name}.txt").write_text(header.format(version) + "\n".join(items) + "\n")
        print(f"{name}: {len(items)}")


if __name__ == "__main__":
    main()
