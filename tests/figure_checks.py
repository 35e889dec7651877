"""What a reader would see wrong in a figure, checked on what matplotlib draws: texts (titles,
tick labels, legends, colour-bar numbers, notes) that run into each other."""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import matplotlib.text
import numpy as np
import pytest
from matplotlib.backends.backend_agg import RendererAgg


def _outline(text, renderer) -> list[tuple[float, float]]:
    """The four corners (pixels) of the text's box as drawn: its window extent, or for a rotated
    text the box turned about its centre (the extent of a text at 45° is a far larger square)."""
    box = text.get_window_extent(renderer)
    angle = text.get_rotation()
    if angle % 90 == 0:
        return [(box.x0, box.y0), (box.x1, box.y0), (box.x1, box.y1), (box.x0, box.y1)]
    text.set_rotation(0)
    try:
        flat = text.get_window_extent(renderer)
    finally:
        text.set_rotation(angle)
    (cx, cy), c, s = box.get_points().mean(0), math.cos(math.radians(angle)), math.sin(math.radians(angle))
    half = [(-flat.width / 2, -flat.height / 2), (flat.width / 2, -flat.height / 2),
            (flat.width / 2, flat.height / 2), (-flat.width / 2, flat.height / 2)]
    return [(cx + dx * c - dy * s, cy + dx * s + dy * c) for dx, dy in half]


def _overlap(p: list, q: list, slack: float) -> bool:
    """Two convex outlines overlap by more than `slack` pixels along every axis that could
    separate them (the separating axis theorem, the edges' normals; their boxes first, cheaply)."""
    for axis in (0, 1):
        if min(max(v[axis] for v in p), max(v[axis] for v in q)) - max(min(v[axis] for v in p),
                                                                        min(v[axis] for v in q)) <= slack:
            return False
    for poly in (p, q):
        for (x1, y1), (x2, y2) in zip(poly, poly[1:] + poly[:1]):
            nx, ny = y2 - y1, x1 - x2
            norm = math.hypot(nx, ny) or 1.0
            a = [(x * nx + y * ny) / norm for x, y in p]
            b = [(x * nx + y * ny) / norm for x, y in q]
            if min(max(a), max(b)) - max(min(a), min(b)) <= slack:
                return False
    return True


def _overlaps(drawn: list, slack: float) -> list[tuple[str, str]]:
    """Pairs of (text, outline) that overlap by more than `slack` pixels: the pairs whose boxes
    overlap found at once (a 40-class confusion matrix draws 1,600 numbers), then each checked."""
    if len(drawn) < 2:
        return []
    corners = np.array([outline for _, outline in drawn])  # (n, 4, 2)
    lo, hi = corners.min(1), corners.max(1)  # (n, 2) each
    depth = np.minimum(hi[:, None], hi[None]) - np.maximum(lo[:, None], lo[None])  # (n, n, 2)
    first, second = np.nonzero(np.triu((depth > slack).all(-1), 1))
    return [(drawn[i][0], drawn[j][0]) for i, j in zip(first.tolist(), second.tolist())
            if _overlap(drawn[i][1], drawn[j][1], slack)]


@contextlib.contextmanager
def _recording() -> Iterator[dict]:
    """Every non-empty text drawn while inside, as {(figure, renderer, pass): (a point in pixels, the
    figure's id, [(text, outline in pixels)])}: only what is drawn counts (an axis keeps tick labels
    outside its view that it never draws). Neither figures nor renderers are kept: a renderer
    holds the whole image."""
    drawn: dict = {}
    real_draw = matplotlib.text.Text.draw

    passes: dict = {}  # (figure, renderer) → (pass number, ids of the texts drawn in it)
    tokens = iter(range(1 << 62))

    def draw(text, renderer):
        real_draw(text, renderer)
        # what a PNG shows (savefig's "tight" box and the PNG itself); a PDF places the same texts
        if isinstance(renderer, RendererAgg) and text.get_visible() and text.get_text().strip():
            # a token of the figure's own, not id(): a closed figure's id comes back for the next
            fig = text.figure
            if not hasattr(fig, "_overlap_check_token"):
                fig._overlap_check_token = next(tokens)
            key = (fig._overlap_check_token, id(renderer))
            number, seen = passes.setdefault(key, (0, set()))
            if id(text) in seen:  # drawn again by the same renderer: a new pass (savefig's "tight" box)
                number, seen = number + 1, set()
                passes[key] = (number, seen)
            seen.add(id(text))
            entry = drawn.setdefault(key + (number,), (renderer.points_to_pixels(1), key[0], []))
            entry[2].append((text.get_text(), _outline(text, renderer)))
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
