"""TFRecord framing of the transform's sink: the public implementation vs Beam's private one.

components/transform/tfrecord_sink.py frames records with `google_crc32c` (documented TFRecord
format) instead of Beam's private `tfrecordio._TFRecordUtil`. This prints the median time per
record of both over the same seeded records (and checks the bytes are identical).

  .venv/bin/python benchmarks/tfrecord_framing.py [--records 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import time

import numpy as np

from components.transform.tfrecord_sink import frame_records


def beam_private_framing(records: list[bytes]) -> bytes:
    """What the sink did before: Beam's private masked CRC (apache_beam.io.tfrecordio)."""
    from apache_beam.io import tfrecordio

    masked_crc = tfrecordio._TFRecordUtil._masked_crc32c
    parts = []
    for record in records:
        length = struct.pack("<Q", len(record))
        parts += (length, struct.pack("<I", masked_crc(length)), record, struct.pack("<I", masked_crc(record)))
    return b"".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sizes = rng.integers(200, 1200, args.records)  # about a transformed example's size
    records = [rng.bytes(int(n)) for n in sizes]
    assert beam_private_framing(records[:1000]) == frame_records(records[:1000])
    times: dict[str, list[float]] = {"beam private (before)": [], "public (now)": []}
    for _ in range(args.repeats):
        for name, frame in (("beam private (before)", beam_private_framing), ("public (now)", frame_records)):
            started = time.perf_counter()
            frame(records)
            times[name].append(time.perf_counter() - started)
    print(f"TFRecord framing of {args.records:,} records ({int(sizes.mean())} bytes mean), median of {args.repeats}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:24s} {median:.3f} s   {median / args.records * 1e6:.2f} us/record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
