"""Kill a training run inside an epoch, as a SIGINT would, for the resume tests."""
from __future__ import annotations

from nesy_gedi import engine


def kill_at_batch(monkeypatch, call: int) -> None:
    """The engine's step module raises KeyboardInterrupt on its `call`-th batch."""
    real = engine._Step.forward
    calls = {"n": 0}

    def forward(self, *args):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(engine._Step, "forward", forward)
