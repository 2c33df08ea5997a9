"""Timestamps that only move forward, whatever the source does.

A source whose clock restarts (a publisher reconnecting behind a relay, two recordings
joined, a broken encoder) makes decoding timestamps (DTS) jump backwards. Muxers refuse a
DTS that does not increase: the recording would end at the jump, or no MP4 would be
written at all. `Timeline` rewrites each packet's timestamps so that they always increase
and the media after the jump follows on from the media before it.
"""

from __future__ import annotations

import math
from fractions import Fraction

import av

# A step back larger than this is the source's clock starting over; a smaller one is a
# damaged or jittery timestamp. No healthy stream steps back at all, so the exact value only
# decides how a restart of less than this is handled (packets squeezed in, see `place`).
RESTART_SECONDS = Fraction(1, 2)
# The least step between two packets of a stream. One tick of the source's clock is not
# enough: a muxer with a coarser clock (MP4 audio counts samples) would round both to the
# same DTS and refuse the second. Healthy streams step 16 ms or more per packet.
MIN_STEP_SECONDS = Fraction(1, 1000)


class _Stream:
    """One stream's place on the output clock, in ticks of its own time base."""

    __slots__ = ("base", "end", "epoch", "last", "restart", "shift", "step")

    def __init__(self, base: Fraction, epoch: int, offset: Fraction) -> None:
        self.base = base
        self.restart = math.floor(RESTART_SECONDS / base)
        self.step = max(1, math.ceil(MIN_STEP_SECONDS / base))
        self.join(epoch, offset)
        self.last: int | None = None  # the last output DTS
        self.end: int | None = None  # where the latest packet ends (its DTS plus its duration)

    def join(self, epoch: int, offset: Fraction) -> None:
        self.epoch = epoch
        self.shift = round(offset / self.base)


class Timeline:
    """Puts packets on one output clock on which each stream's DTS strictly increases.

    When a stream jumps back by more than RESTART_SECONDS, a new epoch of the source's clock
    begins; the first stream to reach it sets the epoch's offset so that it continues right
    after everything written so far. The other streams join that epoch (with the same
    offset, so audio and video stay together) when they jump back themselves: a demuxer may
    still hand over a few packets of the old epoch after the first packet of the new one.
    A smaller step back, or a step forward of less than MIN_STEP_SECONDS, moves only that
    packet, to MIN_STEP_SECONDS after its predecessor.

    Integer ticks per packet, fractions only when an epoch begins: a long recording's
    transcode places every one of its packets.
    """

    def __init__(self, start: float = 0.0) -> None:
        # Seconds added to the source's timestamps in each epoch; `start` becomes zero.
        self._offsets: list[Fraction] = [-Fraction(start)]
        self._streams: dict[int, _Stream] = {}  # by stream index

    def place(self, packet: av.Packet) -> None:
        """Rewrite `packet`'s DTS and PTS onto the output clock (one without a DTS: as it is)."""
        if packet.dts is None or not packet.time_base:
            return
        stream = self._streams.get(packet.stream.index)
        if stream is None:
            epoch = len(self._offsets) - 1
            stream = _Stream(Fraction(packet.time_base), epoch, self._offsets[epoch])
            self._streams[packet.stream.index] = stream
        dts = packet.dts + stream.shift
        last = stream.last
        if last is not None and last - dts > stream.restart:
            if stream.epoch + 1 == len(self._offsets):
                written = max(s.end * s.base for s in self._streams.values() if s.end is not None)
                self._offsets.append(written - packet.dts * stream.base)
            stream.join(stream.epoch + 1, self._offsets[stream.epoch + 1])
            dts = packet.dts + stream.shift
        pts = None if packet.pts is None else packet.pts + (dts - packet.dts)
        if last is not None and dts < last + stream.step:
            # Too small a step back for a restart, a damaged timestamp, or a stream joining
            # an epoch a little behind where it was: just after its predecessor.
            dts = last + stream.step
        if pts is not None and pts < dts:
            pts = dts  # muxers refuse a packet shown before it is decoded
        packet.dts = dts
        if pts is not None:
            packet.pts = pts
        stream.last = dts
        end = dts + (packet.duration or 0)
        stream.end = end if stream.end is None else max(stream.end, end)
