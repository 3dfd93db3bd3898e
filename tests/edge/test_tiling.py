"""Tiling: tiles cover the frame, and tile-then-stitch is the identity."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lineside.edge.tiling import axis_spans, cut, make_grid, stitch


def test_severstal_strip_gives_seven_flush_tiles():
    grid = make_grid((256, 1600), (256, 256))
    assert grid.count == 7
    assert grid.cols[0].start == 0 and grid.cols[-1].start == 1600 - 256


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 3000), tile=st.integers(1, 512))
def test_axis_spans_partition_the_axis(length, tile):
    spans = axis_spans(length, tile)
    # Ownership ranges are contiguous, in order, and cover [0, length) exactly once.
    assert spans[0].keep_from == 0 and spans[-1].keep_to == length
    for a, b in itertools.pairwise(spans):
        assert a.keep_to == b.keep_from
    for s in spans:
        assert s.start <= s.keep_from < s.keep_to <= s.start + tile
        assert s.start >= 0 and (s.start + tile <= length or length <= tile)


@settings(max_examples=150, deadline=None)
@given(height=st.integers(1, 300), width=st.integers(1, 900),
       tile_h=st.sampled_from([16, 32, 64, 128, 256]),
       tile_w=st.sampled_from([16, 48, 64, 256]), channels=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_cut_then_stitch_is_identity(height, width, tile_h, tile_w, channels, seed):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (channels, height, width), dtype=np.uint8)
    grid = make_grid((height, width), (tile_h, tile_w))
    tiles = cut(frame, grid)
    assert tiles.shape == (grid.count, channels, tile_h, tile_w)
    assert np.array_equal(stitch(tiles, grid), frame)


def test_2d_frame_gets_one_channel():
    frame = np.arange(256 * 1000, dtype=np.uint32).reshape(256, 1000).astype(np.uint8)
    grid = make_grid(frame.shape, (256, 256))
    assert np.array_equal(stitch(cut(frame, grid), grid)[0], frame)


def test_cut_replicates_grey_into_the_model_channels():
    frame = np.arange(64 * 100, dtype=np.uint32).reshape(64, 100).astype(np.uint8)
    grid = make_grid(frame.shape, (32, 32))
    tiles = cut(frame, grid, 3)
    assert tiles.shape == (grid.count, 3, 32, 32)
    assert (tiles == tiles[:, :1]).all()
    assert np.array_equal(stitch(tiles, grid)[2], frame)
