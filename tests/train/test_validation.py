"""Validation counts: the level histogram equals thresholding each pixel at every tuning
threshold (the memory it saves is measured by scripts/measure_training.py, not here)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lineside.train.tuning import THRESHOLDS
from lineside.train.validation import count_above

LIMITS = np.asarray(THRESHOLDS, np.float32)


def naive(probabilities: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    above = probabilities[None] > LIMITS[:, None, None, None]  # (T, K, H, W)
    predicted = above.reshape(*above.shape[:2], -1).sum(2).T
    inside = (above & masks[None]).reshape(*above.shape[:2], -1).sum(2).T
    return predicted, inside


# Probabilities on and next to the thresholds as well as anywhere: '>' must stay strict.
edges = st.sampled_from([float(x) for t in LIMITS for x in (t, np.nextafter(t, 1),
                                                            np.nextafter(t, 0))])
values = st.one_of(st.floats(0, 1, width=32), edges)


@settings(max_examples=150, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 12),
                                    st.integers(1, 30)), elements=values),
       st.data())
def test_counts_equal_thresholding_at_every_threshold(probabilities, data):
    masks = data.draw(arrays(np.bool_, probabilities.shape))
    predicted = np.zeros((len(probabilities), len(LIMITS)), np.int64)
    inside = np.zeros_like(predicted)
    count_above(probabilities, masks, LIMITS, predicted, inside)
    want_predicted, want_inside = naive(probabilities, masks)
    np.testing.assert_array_equal(predicted, want_predicted)
    np.testing.assert_array_equal(inside, want_inside)
