"""The study's Keras autoencoder (with its hint head), timed in training; prints one JSON line.

Run by ``bench_train.py`` with an interpreter that has TensorFlow (``pip install
tensorflow-cpu``), so that Keras and latentsearch are measured side by side on the same
machine. It needs no latentsearch import: TensorFlow may live in its own virtual environment.

    python benchmarks/keras_seed_ae.py --threads 2 --images 3200
"""

from __future__ import annotations

import argparse
import json
import time


def build_model():  # type: ignore[no-untyped-def]
    """Gosthipaty & Chakraborty (2020): conv autoencoder + GAP -> Dense(10) on ``retrieval``."""
    from tensorflow import keras
    from tensorflow.keras import layers

    def block(x, filters, name=None):  # type: ignore[no-untyped-def]
        x = layers.Conv2D(filters, 3, padding="same", name=name)(x)
        return x, layers.ReLU()(layers.BatchNormalization()(x))

    inp = keras.Input((32, 32, 3))
    _, x = block(inp, 32)
    x = layers.MaxPooling2D()(x)
    _, x = block(x, 64)
    x = layers.MaxPooling2D()(x)
    retrieval, x = block(x, 128, name="retrieval")
    x = layers.UpSampling2D()(x)
    _, x = block(x, 128)
    x = layers.UpSampling2D()(x)
    _, x = block(x, 64)
    recon = layers.Conv2D(3, 3, padding="same", activation="sigmoid", name="recon")(x)
    hint = layers.Dense(10, activation="softmax", name="hint")(
        layers.GlobalAveragePooling2D()(retrieval)
    )
    return keras.Model(inp, [recon, hint])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=3200, help="images per timed epoch")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up)")
    args = ap.parse_args()
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.keras.utils.set_random_seed(0)
    model = build_model()
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss={"recon": "mse", "hint": "categorical_crossentropy"},
    )
    rng = np.random.default_rng(0)
    x = rng.random((args.images, 32, 32, 3), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.images)]

    class Timer(tf.keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            self.seconds.append(time.perf_counter() - self.t0)

    timer = Timer()
    model.fit(
        x,
        {"recon": x, "hint": y},
        batch_size=32,
        epochs=args.epochs + 1,
        shuffle=True,
        verbose=0,
        callbacks=[timer],
    )
    rates = [args.images / s for s in timer.seconds[1:]]  # the first epoch traces the graph
    print(
        json.dumps(
            {
                "tensorflow": tf.__version__,
                "parameters": int(model.count_params()),
                "threads": args.threads,
                "images_per_second_runs": [round(r, 1) for r in rates],
                "images_per_second": round(max(rates), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
