"""Test helper, run as a subprocess: Keras (TensorFlow backend) models on the canonical probe weights,
converted to TFLite by the TFLite converter, for the LiteRT runtime tests.

    python tests/deploy_tflite.py OUT_DIR BATCH MODEL...

writes OUT_DIR/<model>.tflite. The rnn is converted for a fixed batch of BATCH: Keras' GRU becomes a
TFLite WHILE loop whose tensor lists need a static batch to lower to builtin ops. A subprocess,
because KERAS_BACKEND is fixed when Keras is first imported.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(out: Path, batch: int, models: list[str]) -> None:
    import keras
    import tensorflow as tf

    from harness.equivalence import probe_weights
    from harness.protocol import RunOptions
    from harness.specs import get_spec

    for name in models:
        spec = get_spec(name)
        trainer = importlib.import_module(f"python_models.keras.{name}").build(spec, RunOptions(backend="tensorflow"))
        trainer.set_weights(probe_weights(spec))
        model = trainer.model
        if name == "rnn":
            inputs = keras.Input(model.input_shape[1:], batch_size=batch, dtype="int64")
            model = keras.Model(inputs, model(inputs))
        (out / f"{name}.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
