"""The vision tower on its own CUDA stream: the language model's steps do not wait for images they do not use.

vLLM runs the encoder, then the step's language-model forward, on one stream, so every decode in a step waits
for every image encoded in it. With our encode-ahead scheduler (`qwenvl_vllm.serving.encode_ahead`) an image
is encoded one or more steps before the step that consumes its embeddings; here that encoding goes to a
second stream, and the main stream waits for it (an event) only where the embeddings are used, in
`embed_input_ids`. The scheduler learns what has finished from `PROGRESS` (same process: vLLM's uni-process
executor; elsewhere it is inactive and the scheduler does not hold anything back).

Two streams of equal priority share the GPU's SMs block by block, so a decode step's short kernels queue
behind the tower's long GEMMs and attention and stall about as long as if they ran after them (measured:
ITL p99 192 vs 185 ms at c=64). So the language model's stream gets the higher CUDA priority: the side
stream is created at the lowest, and the worker thread's current stream (vLLM's compute stream, on which it
captures and replays its CUDA graphs) is replaced by one of higher priority before the weights load
(`QWENVL_VLLM_LM_STREAM_PRIORITY`). Priority only orders work waiting for SMs: the tower's GEMM and
FlashAttention kernels keep theirs until they end, so a decode kernel can still wait for one tower kernel;
so on the side stream the models run the tower one item at a time, which keeps those kernels short.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import torch

from qwenvl_vllm.log import RareEvents
from qwenvl_vllm.models.host_scopes import scope
from qwenvl_vllm.settings import get_settings

if TYPE_CHECKING:
    from qwenvl_vllm.models.tower_slices import TowerJob, TowerSlicer

LM_PRIORITY = -1  # CUDA: lower numbers run first; 0, the default, is the lowest


class EncoderProgress:
    """Items given to the tower and items finished, counted in this process, in launch order."""

    def __init__(self) -> None:
        self.active = False  # a model in this process encodes on a side stream or in slices
        self.scheduling = False  # an encode-ahead scheduler runs in this process (the engine is serving)
        self.backlog = False  # the slicing scheduler found the engine behind: the slicer does more
        self.decodes = 0  # requests past their prompt at the slicing scheduler's last step
        self.reset()

    def reset(self) -> None:
        self.launched = 0
        self.finished = 0
        self.tower_work = 0  # patches x blocks the slicer launched (the step trace records each step's)
        self._pending: deque[tuple[int, torch.cuda.Event | None]] = deque()

    def add(self, items: int, event: torch.cuda.Event | TowerJob | None) -> None:
        """`event`: anything whose query() says the items have finished; None: finished already."""
        self.launched += items
        self._pending.append((self.launched, event))

    def finished_items(self) -> int:
        while self._pending and (self._pending[0][1] is None or self._pending[0][1].query()):
            self.finished = self._pending.popleft()[0]
        return self.finished


PROGRESS = EncoderProgress()


def prioritise_current_stream(device: torch.device) -> None:
    """This thread's work from now on goes to a new stream of LM_PRIORITY (vLLM tracks the switch: it
    patches `torch.cuda.set_stream`)."""
    if torch.cuda.current_stream(device).priority <= LM_PRIORITY:
        return  # re-entrant: a second model in this process keeps the stream
    torch.cuda.synchronize(device)  # what was queued on the old stream is done before the new one runs
    torch.cuda.set_stream(torch.cuda.Stream(device, priority=LM_PRIORITY))


def side_stream(device: torch.device) -> torch.cuda.Stream | None:
    """A stream for the tower beside the language model's (None off CUDA), at the lowest priority; the
    language model's stream is raised above it where `QWENVL_VLLM_LM_STREAM_PRIORITY` is on."""
    if device.type != "cuda":
        return None
    stream = torch.cuda.Stream(device, priority=0)
    if get_settings().lm_stream_priority:
        prioritise_current_stream(device)
    return stream


def _tensors(value: object) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


class EncoderStream:
    """Runs encodes on a side stream (CUDA) or inline (CPU), and makes consumers wait for their outputs."""

    def __init__(self, device: torch.device) -> None:
        self.stream = side_stream(device)
        self._events: dict[int, torch.cuda.Event] = {}  # output storage -> its encode's end
        # the scheduler holds a prefill until its encode ended, so the LM's stream should never wait here
        self.waits_on_unfinished = RareEvents("a prefill waited for its image's encode on the side stream")
        PROGRESS.active = self.stream is not None

    def run(self, encode: Callable[[], Sequence[torch.Tensor]], inputs: object) -> Sequence[torch.Tensor]:
        if self.stream is None:
            outputs = encode()
            PROGRESS.add(len(outputs), None)
            return outputs
        main = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(main)  # inputs were copied to the device on the main stream
        with torch.cuda.stream(self.stream):
            outputs = encode()
        for tensor in _tensors(inputs):
            if tensor.is_cuda:
                tensor.record_stream(self.stream)  # freed by the caller while the tower may still read it
        event = torch.cuda.Event()
        event.record(self.stream)
        self._prune()
        for key, out in {storage_key(o): o for o in outputs if o.is_cuda}.items():
            out.record_stream(main)  # read on the main stream after it is freed on the side stream's clock
            self._events[key] = event
        PROGRESS.add(len(outputs), event)
        return outputs

    def wait_for(self, embeddings: Iterable[torch.Tensor]) -> None:
        """The current stream waits for the encodes that produced these embeddings (views of outputs)."""
        if self.stream is None:
            return
        waited: set[int] = set()
        for embedding in embeddings:
            event = self._events.get(storage_key(embedding))
            if event is not None and id(event) not in waited:
                if not event.query():
                    self.waits_on_unfinished.note()
                torch.cuda.current_stream(self.stream.device).wait_event(event)
                waited.add(id(event))

    def _prune(self) -> None:
        for key in [k for k, e in self._events.items() if e.query()]:
            del self._events[key]


def scheduler_class(vllm_config: object) -> type:
    """The configured scheduler class (vLLM's config may hold its qualified name)."""
    from vllm.utils.import_utils import resolve_obj_by_qualname

    cls = vllm_config.scheduler_config.scheduler_cls
    return resolve_obj_by_qualname(cls) if isinstance(cls, str) else cls


def wants_encoder_stream(vllm_config: object) -> bool:
    """True when the configured scheduler encodes ahead (it says so with `uses_encoder_stream`)."""
    return bool(getattr(scheduler_class(vllm_config), "uses_encoder_stream", False))


def wants_tower_slices(vllm_config: object) -> bool:
    """True when the configured scheduler wants the tower spread over steps (`slices_tower`)."""
    return bool(getattr(scheduler_class(vllm_config), "slices_tower", False))


class SideStreamEmbedding:
    """Mixin (before `SupportsMultiModal`) for our multimodal models: under an encode-ahead scheduler,
    `embed_multimodal` runs the model's `_embed` on an `EncoderStream` and `embed_input_ids` waits for it;
    under a slicing one, models with `supports_tower_slices` queue their tower's work in a `TowerSlicer`
    (from `_embed`) and every `embed_input_ids` launches the next slices."""

    _encoder_stream: EncoderStream | None = None
    _tower_slicer: TowerSlicer | None = None
    supports_tower_slices = False

    def _init_encoder_stream(self, vllm_config: object) -> None:
        """At model construction, on the worker's device (so the scheduler, built later in the same
        process, already sees an active side stream)."""
        device = torch.device(vllm_config.device_config.device)
        if self.supports_tower_slices and wants_tower_slices(vllm_config):
            from qwenvl_vllm.models.slice_stream import SliceStream
            from qwenvl_vllm.models.step_budget import StepBudget, small_batch_scale
            from qwenvl_vllm.models.tower_slices import TowerSlicer, check_sliceable

            check_sliceable(vllm_config)

            settings = get_settings()
            target = settings.step_target_ms
            self._tower_slicer = TowerSlicer(
                settings.tower_step_patch_layers,
                settings.tower_backlog_scale,
                StepBudget(target, margin=settings.step_target_margin, admit_cost=settings.step_admit_cost)
                if target
                else None,
                small_batch_scale(target, settings.step_target_small_ms),
                SliceStream(side_stream(device) if settings.slices_on_side_stream else None),
            )
        elif wants_encoder_stream(vllm_config):
            self._encoder_stream = EncoderStream(device)

    def _embed(self, kwargs: dict[str, object]) -> Sequence[torch.Tensor]:
        raise NotImplementedError

    def embed_multimodal(self, **kwargs: object) -> Sequence[torch.Tensor]:
        with scope("embed_multimodal"):
            return self._embed_multimodal(kwargs)

    def _embed_multimodal(self, kwargs: dict[str, object]) -> Sequence[torch.Tensor]:
        if self._tower_slicer is not None:
            outputs = self._embed(kwargs)
            for output in outputs:
                PROGRESS.add(1, self._tower_slicer.job_of(output))
            return outputs
        if self._encoder_stream is None:
            return self._embed(kwargs)
        return self._encoder_stream.run(lambda: self._embed(kwargs), list(kwargs.values()))

    def embed_input_ids(
        self,
        input_ids: torch.Tensor,
        multimodal_embeddings: Sequence[torch.Tensor] | None = None,
        *,
        is_multimodal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self._tower_slicer is not None:
            self._tower_slicer.before_lm(multimodal_embeddings or (), tokens=input_ids.shape[0])
        elif self._encoder_stream is not None and multimodal_embeddings is not None:
            self._encoder_stream.wait_for(multimodal_embeddings)  # encoded on the side stream
        return super().embed_input_ids(input_ids, multimodal_embeddings, is_multimodal=is_multimodal)
