"""edge-bench: how fast a bundle runs on this machine, its stages side by side in one run.

| stage | module | what it measures |
|---|---|---|
| bare | bare.py | the model alone (screen + segmentation) on pre-cut tiles: the upper bound |
| daemon | daemon.py | a real edge-serve process over ZeroMQ: saturation, latency at offered loads |
| baseline | baseline.py | the seeds' way, torch eager FP32 one frame at a time (needs torch) |

frames.py picks the frames, report.py writes the tables and the plot, cli.py is the
command. Ratios are printed last; absolute numbers on a shared machine are noise.
"""
