"""What a reader would see wrong in a figure, checked on what matplotlib draws: texts (titles,
tick labels, legends, colour-bar numbers, notes) that run into each other."""
from __future__ import annotations

import contextlib
from typing import Iterator

import matplotlib.text
import pytest


def _overlaps(drawn: list, slack: float) -> list[tuple[str, str]]:
    """Pairs of (text, box) whose boxes overlap by more than `slack` pixels both ways."""
    return [(a, b) for i, (a, ba) in enumerate(drawn) for b, bb in drawn[i + 1:]
            if min(ba.x1, bb.x1) - max(ba.x0, bb.x0) > slack and min(ba.y1, bb.y1) - max(ba.y0, bb.y0) > slack]


@contextlib.contextmanager
def _recording() -> Iterator[dict]:
    """Every non-empty text drawn while inside, as {(figure, renderer): (a point in pixels, the
    figure's id, [(text, box in pixels)])}: only what is drawn counts (an axis keeps tick labels
    outside its view that it never draws). Neither figures nor renderers are kept: a renderer
    holds the whole image."""
    drawn: dict = {}
    real_draw = matplotlib.text.Text.draw

    def draw(text, renderer):
        real_draw(text, renderer)
        if text.get_visible() and text.get_text().strip():
            key = (id(text.figure), id(renderer))
            entry = drawn.setdefault(key, (renderer.points_to_pixels(1), id(text.figure), []))
            entry[2].append((text.get_text(), text.get_window_extent(renderer)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matplotlib.text.Text, "draw", draw)
        yield drawn


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of texts of `fig` that overlap by more than a point, the figure drawn once to see."""
    with _recording() as drawn:
        fig.canvas.draw()
    return [pair for point, _, texts in drawn.values() for pair in _overlaps(texts, point)]


@contextlib.contextmanager
def overlaps_in_saved_figures() -> Iterator[list]:
    """While inside, every figure drawn (as when save_figure writes its PNG) is checked as it is
    drawn, at no extra drawing: yields a list that gets, per figure with overlapping texts, its
    longest text (the title, usually) and the pairs."""
    found: list = []
    with _recording() as drawn:
        yield found
    seen = set()
    for point, fig, texts in drawn.values():
        pairs = _overlaps(texts, point)
        if pairs and fig not in seen:
            seen.add(fig)
            found.append((max((t for t, _ in texts), key=len)[:80], pairs[:5]))
