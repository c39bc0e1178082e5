"""Progress bars for the CLI (the library itself only logs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from pamc.engine import Callback


class TqdmProgress(Callback):
    """One bar per epoch showing the running loss and throughput."""

    def __init__(self, desc: str = "", disable: bool | None = None) -> None:
        self.desc = desc
        self.disable = disable
        self.bar: tqdm | None = None

    def on_epoch_start(self, epoch: int, num_batches: int) -> None:
        self.bar = tqdm(total=num_batches, desc=f"{self.desc}epoch {epoch}", unit="batch",
                        leave=False, disable=self.disable, dynamic_ncols=True)

    def on_batch_end(self, epoch: int, step: int, loss: float, num_images: int) -> None:
        if self.bar is not None:
            self.bar.update(1)
            rate = self.bar.format_dict.get("rate") or 0.0
            self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate * num_images:.0f}", refresh=False)

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        tqdm.write(
            f"{self.desc}epoch {epoch}: loss {metrics['train_loss']:.4f}  val mAP {metrics['val_map']:.2f}"
            f"{' *' if metrics.get('is_best') else ''}  {metrics['train_images_per_s']:.0f} img/s",
        )


def arm_progress(no_progress: bool) -> Callable[[str, int], list[Callback]]:
    """``callbacks_for`` of the arms runner: one bar per arm and seed, named ``[arm sSEED]``."""
    return lambda arm, seed: [TqdmProgress(f"[{arm} s{seed}] ", disable=True if no_progress else None)]
