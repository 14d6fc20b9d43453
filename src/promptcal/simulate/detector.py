"""Read out a noiseless model as a post-ISR exposure would look.

Order of effects for one readout (a snap or the whole visit):

1. **Bleed**: charge above ``saturation`` in a column run flows along the column,
   half up and half down, filling neighbouring pixels to saturation (charge reaching
   the edge is lost).
2. **Noise**: Poisson on electrons (``model × gain``) or Gaussian of the same variance,
   plus Gaussian read noise; back to counts.
3. **Cosmic rays** of this readout are added (not in the model or the variance).
4. **Saturation**: full-well pixels (bled model at ``saturation``) and pixels whose
   noisy value reaches it read exactly ``saturation`` and get ``SAT``, as an ISR marks
   them.
5. **Bad columns**: garbage values uniform in ``[0, bad_column_max_value)``, ``BAD`` set.

The variance plane is the expected variance of the bled model:
``model / gain + (read_noise / gain)²`` [count²].
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from promptcal.core.exposure import Mask
from promptcal.simulate.config import SkyConfig


def _fill(segment: np.ndarray, charge: float, saturation: float) -> None:
    """Fill ``segment`` (a view running away from a saturated run) with ``charge``."""
    if charge <= 0.0 or segment.size == 0:
        return
    capacity = np.clip(saturation - segment, 0.0, None)
    cumulative = np.cumsum(capacity)
    k = int(np.searchsorted(cumulative, charge))
    segment[:k] = np.maximum(segment[:k], saturation)
    if k < segment.size:
        segment[k] += charge - (cumulative[k - 1] if k > 0 else 0.0)


def bleed_columns(model: np.ndarray, saturation: float) -> int:
    """Redistribute charge above ``saturation`` along columns, in place.

    Returns the number of columns that bled. Charge is conserved except what
    leaves the image at the top or bottom edge.
    """
    over_any = model > saturation
    cols = np.unique(np.nonzero(over_any)[1])
    for col in cols:
        v = model[:, col].astype(np.float64)
        over = v > saturation
        edges = np.diff(np.concatenate(([0], over.astype(np.int8), [0])))
        starts = np.nonzero(edges == 1)[0]
        ends = np.nonzero(edges == -1)[0]
        # Excess of every run first, so filling one run's trail cannot eat another's excess.
        excess = [float((v[s:e] - saturation).sum()) for s, e in zip(starts, ends, strict=True)]
        v[over] = saturation
        for s, e, q in zip(starts, ends, excess, strict=True):
            _fill(v[e:], 0.5 * q, saturation)
            if s > 0:
                _fill(v[s - 1 :: -1], 0.5 * q, saturation)
        model[:, col] = v
    return len(cols)


def read_out(
    model: np.ndarray,
    config: SkyConfig,
    rng: np.random.Generator,
    *,
    cr_pixels: Table,
    snap: int,
    bad_columns: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, Mask]:
    """One noisy readout of ``model`` [count].

    Returns
    -------
    image, variance : numpy.ndarray
        float32 [count] and [count²].
    mask : promptcal.core.exposure.Mask
        SAT, BAD (and CR when ``do_mask_cosmic_rays``) planes set.
    """
    gain = config.gain
    rn = config.read_noise / gain
    expected = np.maximum(model, 0.0).astype(np.float32)
    sat = config.saturation
    if sat is not None:
        bleed_columns(expected, sat)
    variance = expected / np.float32(gain) + np.float32(rn * rn)
    if config.do_poisson:
        electrons = rng.poisson(expected.astype(np.float64) * gain)
        image = (electrons / gain).astype(np.float32)
        del electrons
    else:
        image = expected + np.sqrt(expected / np.float32(gain)) * rng.standard_normal(
            expected.shape, dtype=np.float32
        )
    if rn > 0:
        image += np.float32(rn) * rng.standard_normal(image.shape, dtype=np.float32)

    mask = Mask(np.zeros(image.shape, dtype=np.int32))
    x0, y0 = config.x0, config.y0
    mine = cr_pixels[cr_pixels["snap"] == snap] if len(cr_pixels) else cr_pixels
    if len(mine):
        iy = np.asarray(mine["y"]) - y0
        ix = np.asarray(mine["x"]) - x0
        np.add.at(image, (iy, ix), np.asarray(mine["counts"], dtype=np.float32))
        if config.do_mask_cosmic_rays:
            mask.array[iy, ix] |= mask.bit("CR")
    if sat is not None:
        # Full wells (the bled model at saturation) read at the level whatever the noise.
        saturated = (image >= sat) | (expected >= sat)
        mask.array[saturated] |= mask.bit("SAT")
        image[saturated] = np.float32(sat)
    if len(bad_columns):
        ix = np.asarray(bad_columns) - x0
        image[:, ix] = rng.uniform(0.0, config.bad_column_max_value, (image.shape[0], len(ix)))
        mask.array[:, ix] |= mask.bit("BAD")
    return image, variance.astype(np.float32, copy=False), mask
