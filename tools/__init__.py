"""Offline tools: everything a line PC does not need to serve, kept out of the runtime.

| command | module | what |
|---|---|---|
| edge-eval | evaluate.py (+ evaluation.py) | Kaggle Dice etc. of a bundle or checkpoint, overlays |
| edge-bench | bench/ | bare model, daemon over ZeroMQ, torch baseline, side by side |
| edge-demo | demo.py | the whole demo line, generated data to reject signals |
| edge-camsim | camsim.py | replay a folder of images as a camera |

They build on the runtime (lineside.edge) and never the other way round.
"""
