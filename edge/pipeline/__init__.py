"""The daemon's stages, each a small object with its inputs, outputs and counters.

| stage | module | in -> out |
|---|---|---|
| receive | receive.py | socket messages -> frames in per-camera queues (frame_queues.py) |
| batch | batch.py | queued frames -> `Batch` of tiles for the model in service |
| screen | screen.py | `Batch` -> tiles flagged per class by a screening classifier |
| infer | infer.py | `Batch` -> model outputs -> one `InferredFrame` per frame |
| decide | decide.py | `InferredFrame` -> `reject` (+ `mask`) messages, the verdict |
| publish | publish.py | outbox -> PUB socket; heartbeats; results counted |
| control | control.py | REP socket -> hot swap (model.ModelSlot), status |

model.py composes what runs (bundle + backend + screen + fault injection) for the daemon
and the offline tools alike; worker.py gives stages their threads. lineside.edge.daemon
wires them (docs/architecture.md says how to add one).
"""
