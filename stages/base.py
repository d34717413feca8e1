"""The stage interface: what a DNN stage (or a synthetic stand-in) implements.

The harness (testbed/harness/loops.py) owns the loop, the clocks and the broker; a stage only does work:

- ``ProducerStage.process(frame_id)`` is stage A on one frame: it returns the messages the frame fans
  out to (``Item``: payload bytes/array with shape and dtype) and the time of each of its own steps.
- ``ConsumerStage.process(batch)`` is stage B on a batch of decoded envelopes (undecoded deliveries for a
  stage whose ``reads_messages`` is False); it returns the time of each of its own steps for that batch.

Step times are nanoseconds in the order of the class's ``steps`` names. The harness stamps service
start and end around ``process`` itself, so a stage cannot misreport its own service time.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(slots=True)
class Item:
    """One message stage A emits for a frame."""

    payload: object
    shape: tuple = ()
    dtype: str = "uint8"


@dataclass(slots=True)
class FrameResult:
    items: list = field(default_factory=list)
    steps: tuple = ()  # ns per step of ProducerStage.steps, for the whole frame
    failed: str | None = None  # reason, when the frame could not be processed (it emits nothing)


class ProducerStage(ABC):
    steps: tuple[str, ...] = ()

    def setup(self) -> None:
        """Load models, warm caches. Runs before the clock starts."""

    @abstractmethod
    def process(self, frame_id: int) -> FrameResult: ...

    def describe(self) -> dict:
        """Facts for run.json (model, weights, device, ...)."""
        return {}

    def close(self) -> None:
        pass


class ConsumerStage(ABC):
    steps: tuple[str, ...] = ()
    #: False for a stage that uses only how many messages its batch holds (the synthetic stage): the
    #: harness then hands it the batch undecoded (the broker's deliveries) and reads the headers for its
    #: records in bulk, off the per-message path (testbed/harness/message_log.py)
    reads_messages: bool = True

    def setup(self) -> None:
        pass

    @abstractmethod
    def process(self, batch: list) -> tuple: ...

    def describe(self) -> dict:
        return {}

    def close(self) -> None:
        pass
