"""Compressed shipping: each chunk of new source bytes becomes one gzip member
or one zstd frame, appended to the destination file.

Concatenated gzip members (RFC 1952, section 2.2) and zstd frames (RFC 8878,
section 3) are one valid stream: ``zcat``, ``zstd -d``, Hadoop's ``-text`` and
pyarrow's compressed input streams decompress the whole file to the source's
bytes. So a cycle appends only its new bytes, compressed, and growth still costs
O(new bytes); nothing already shipped is read back or re-encoded.

pyarrow's codecs do the work (no new dependency). Their one-shot ``compress``
releases the GIL; it runs in the transfer's worker thread, never on the event
loop. A ``Codec`` is made per transfer: Arrow's gzip codec keeps one
``z_stream`` per codec object, so one codec must not serve two threads.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow

from ._spec import Compression

# The command-line tools' default levels (gzip -6, zstd -3): the ratio users
# expect from those tools. Arrow's own default for gzip is 9, about 3x slower.
LEVELS = {Compression.GZIP: 6, Compression.ZSTD: 3}

Encode = Callable[[memoryview], pyarrow.Buffer]


def encoder(compression: Compression | None) -> Encode | None:
    """A function turning one chunk into one member/frame; None: ship as is."""
    if compression is None:
        return None
    codec = pyarrow.Codec(str(compression), compression_level=LEVELS[compression])
    compress: Encode = codec.compress
    return compress
