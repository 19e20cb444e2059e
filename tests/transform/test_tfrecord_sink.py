"""The batch TFRecord sink frames records exactly as TensorFlow's own writer does."""

from __future__ import annotations

import gzip

import tensorflow as tf

from components.transform import tfrecord_sink

RECORDS = [b"", b"a", b"\x00\xff" * 300, "pâté ✓".encode(), bytes(range(256)) * 40]


def test_framing_is_byte_identical_to_tf_io_tfrecordwriter(tmp_path):
    path = tmp_path / "reference.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in RECORDS:
            writer.write(record)
    assert tfrecord_sink.frame_records(RECORDS) == path.read_bytes()


def test_gzip_files_read_back_with_tf_data(tmp_path):
    path = tmp_path / "part-00000-of-00001.tfrecord.gz"
    with open(path, "wb") as raw:
        sink_file = tfrecord_sink.GzipFile(raw, tfrecord_sink.TFRecordBatchSink.GZIP_LEVEL)
        sink_file.write(tfrecord_sink.frame_records(RECORDS[:2]))
        sink_file.write(tfrecord_sink.frame_records(RECORDS[2:]))
        sink_file.close()
    assert gzip.decompress(path.read_bytes()) == tfrecord_sink.frame_records(RECORDS)
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]
    assert read == RECORDS
