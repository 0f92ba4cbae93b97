"""Convolutions on a crossbar: a convolution's input unrolled im2col-style, block by block.

A convolution runs on a crossbar as MVMs on its unrolled input: one row per (image, output
position), one column per (input channel, kernel row, kernel column), in torch ``unfold``'s
order (channel outermost), so that ``im2col(x) @ weight.reshape(C_out, -1).T`` is the
convolution. A 3x3 kernel makes the unrolled input 9 times the activation.

``ConvGeometry`` holds the kernel, stride, padding and dilation; ``im2col`` unrolls a batch;
``unrolled_blocks`` yields the unrolled rows of a batch in blocks of a fixed number of rows,
building each block only when it is asked for: ``Chip.conv_mvm`` drives the periphery with
one block per MVM, so the twin receives the activation and the whole unrolled input never
exists at once. A block holds exactly the rows (and columns) the same unrolled matrix would
hold there, so block by block the result equals ``im2col`` followed by MVMs of those rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from device_twin.errors import InvalidArgument

#: Largest kernel side, stride, padding or dilation a request may ask for.
MAX_CONV_PARAM = 64


@dataclass(frozen=True)
class ConvGeometry:
    """How a convolution slides over its input (each a (height, width) pair, as in torch)."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @property
    def taps(self) -> int:
        """Kernel positions per input channel (kh * kw): unrolled columns per channel."""
        return self.kernel[0] * self.kernel[1]

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(Ho, Wo) of an (h, w) input, torch's formula."""
        (kh, kw), (sh, sw) = self.kernel, self.stride
        (ph, pw), (dh, dw) = self.padding, self.dilation
        ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        return ho, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    @classmethod
    def checked(
        cls, kernel: object, stride: object, padding: object, dilation: object
    ) -> ConvGeometry:
        """A geometry from request values (pairs of integers), or ``InvalidArgument`` naming
        the field at fault."""

        def pair(value: object, name: str, minimum: int) -> tuple[int, int]:
            vals = tuple(value) if isinstance(value, tuple | list) else ()
            ints = [v for v in vals if isinstance(v, int | np.integer) and not isinstance(v, bool)]
            if (
                len(vals) != 2
                or len(ints) != 2
                or not all(minimum <= v <= MAX_CONV_PARAM for v in ints)
            ):
                raise InvalidArgument(
                    f"{name} must be two integers in [{minimum}, {MAX_CONV_PARAM}] "
                    f"(height, width), got {value!r}",
                    field=name,
                )
            return int(ints[0]), int(ints[1])

        return cls(pair(kernel, "kernel", 1), pair(stride, "stride", 1),
                   pair(padding, "padding", 0), pair(dilation, "dilation", 1))  # fmt: skip


def im2col(x: torch.Tensor, g: ConvGeometry) -> tuple[torch.Tensor, tuple[int, int]]:
    """``x`` (N, C, H, W) -> ((N*Ho*Wo, C*kh*kw), (Ho, Wo)): one row per (image, output
    position), columns in ``unfold``'s order, so row r equals ``unfold(x)[n].T[p]``.

    Built from a zero-padded channels-last copy of ``x`` with one copy per kernel position
    (kh*kw slabs of C contiguous values each): 3-4 times faster than one strided copy of
    the 6-D patch view, whose innermost runs are kw values long, and several times faster
    than ``unfold`` followed by a transpose.
    """
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = g.kernel, g.stride
    (ph, pw), (dh, dw) = g.padding, g.dilation
    ho, wo = g.output_size(h, w)
    xp = x.new_zeros(n, h + 2 * ph, w + 2 * pw, c)
    xp[:, ph : ph + h, pw : pw + w, :] = x.permute(0, 2, 3, 1)
    out = x.new_empty(n, ho, wo, c, kh, kw)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            out[..., i, j] = xp[
                :, r0 : r0 + (ho - 1) * sh + 1 : sh, c0 : c0 + (wo - 1) * sw + 1 : sw
            ]
    return out.reshape(n * ho * wo, c * kh * kw), (ho, wo)


def unrolled_blocks(
    x: torch.Tensor, g: ConvGeometry, patch_start: int, k: int, rows_per_block: int
) -> Iterator[torch.Tensor]:
    """Columns ``patch_start .. patch_start+k-1`` of ``im2col(x, g)``, in blocks of
    ``rows_per_block`` rows (the last one shorter), each a contiguous (rows, k) tensor.

    Each block unrolls only the images and channels its rows and columns come from (an image
    that straddles two blocks is unrolled for each)."""
    n, _, h, w = x.shape
    ho, wo = g.output_size(h, w)
    per_image = ho * wo
    c0 = patch_start // g.taps
    c1 = -(-(patch_start + k) // g.taps)
    col0 = patch_start - c0 * g.taps
    total = n * per_image
    for r0 in range(0, total, rows_per_block):
        r1 = min(r0 + rows_per_block, total)
        i0, i1 = r0 // per_image, -(-r1 // per_image)
        cols, _ = im2col(x[i0:i1, c0:c1], g)
        block = cols[r0 - i0 * per_image : r1 - i0 * per_image, col0 : col0 + k]
        yield block if block.is_contiguous() else block.contiguous()
