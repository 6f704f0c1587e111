"""The embedded store's acknowledgement log with snapshots: what a restart after a crash restores."""

import numpy as np

from rlrings.rpc import codec
from rlrings.rpc.security import Caller
from rlrings.services.replay.ack_log import AckLog
from rlrings.services.replay.replay import Replay
from rlrings.services.replay.store import SnapshotStore
from rlrings.v1 import tensor_pb2
from tests.helpers import frames, table_config


def open_replay(directory):
    """A replay as the server builds one for store: embedded (no periodic snapshots)."""
    return Replay([table_config("t", max_size=1000, selector="fifo")], store=SnapshotStore(directory),
                  ack_log=AckLog(directory / "acklog"))  # fmt: skip


def insert(replay, start, steps=4, writer="w", sequence=0):
    chunk = tensor_pb2.Chunk(table="t", columns={k: codec.encode(v) for k, v in frames(steps, start).items()},
                             writer_id=writer, sequence=sequence or start + 1)  # fmt: skip
    keys, duplicate = replay.start_insert(chunk).finish(lambda: True)
    assert not duplicate
    return keys


def stored_steps(replay):
    table = replay.tables["t"]
    return table.state().columns["action"][:, 0].tolist()


def test_a_crash_after_a_snapshot_restores_each_acknowledged_chunk_once(tmp_path):
    replay = open_replay(tmp_path)
    insert(replay, 0)
    insert(replay, 4)
    replay.checkpoint()  # holds 0..7; the log's older generations are gone
    insert(replay, 8)
    assert len(replay.ack_log.generations()) == 1
    # the process dies here: no close(), no snapshot of 8..11
    restarted = open_replay(tmp_path)
    assert stored_steps(restarted) == list(range(12))
    assert restarted.tables["t"].bookkeeping().counters["next_key"] == 13  # keys as acknowledged (from 1)
    insert(restarted, 12)  # and it goes on from there
    again = open_replay(tmp_path)
    assert stored_steps(again) == list(range(16))


def test_a_retry_of_a_logged_chunk_is_still_a_duplicate_after_the_restart(tmp_path):
    replay = open_replay(tmp_path)
    insert(replay, 0, writer="client", sequence=1)
    restarted = open_replay(tmp_path)
    chunk = tensor_pb2.Chunk(table="t", columns={k: codec.encode(v) for k, v in frames(4, 0).items()},
                             writer_id="client", sequence=1)  # fmt: skip
    assert restarted.start_insert(chunk).finish(lambda: True)[1], "its ack was lost, not its data"
    assert stored_steps(restarted) == [0, 1, 2, 3]


def test_a_torn_last_record_is_ignored_and_the_records_before_it_restored(tmp_path):
    replay = open_replay(tmp_path)
    insert(replay, 0)
    insert(replay, 4)
    path = tmp_path / "acklog" / f"{replay.ack_log.generation:08d}.log"
    whole = path.read_bytes()
    record = len(whole) // 2
    path.write_bytes(whole + whole[record : record + 100])  # the start of a third record, cut off
    assert stored_steps(open_replay(tmp_path)) == list(range(8))
    damaged = bytearray(whole)
    damaged[-5] ^= 0xFF  # the second record's bytes changed on disk
    path.write_bytes(bytes(damaged))
    assert stored_steps(open_replay(tmp_path)) == [0, 1, 2, 3]


def test_priorities_are_logged_as_the_items_got_them(tmp_path):
    replay = Replay([table_config("p", selector="prioritized")], store=SnapshotStore(tmp_path),
                    ack_log=AckLog(tmp_path / "acklog"))  # fmt: skip
    chunk = tensor_pb2.Chunk(table="p", columns={k: codec.encode(v) for k, v in frames(2, 0).items()},
                             priorities=[1e300])  # fmt: skip
    uploader = Caller("game-client", frozenset({"insert"}), charge_insert=lambda n: None)
    replay.start_insert(chunk, uploader).finish(lambda: True)
    restarted = Replay([table_config("p", selector="prioritized")], store=SnapshotStore(tmp_path),
                       ack_log=AckLog(tmp_path / "acklog"))  # fmt: skip
    np.testing.assert_array_equal(restarted.tables["p"].state().priorities, [1.0, 1.0])


def test_a_queue_restarted_after_a_crash_hands_out_only_what_it_had_not_yet(tmp_path):
    """Items sampled away are logged too: the restarted queue holds exactly the unsampled ones, and
    its rate limiter counts them as waiting (no stall, no repeats)."""
    from rlrings.services.replay.config import TableConfig
    from tests.helpers import FRAME_SIGNATURE

    def queue():
        config = TableConfig.queue("q", FRAME_SIGNATURE, max_size=64)
        return Replay([config], store=SnapshotStore(tmp_path), ack_log=AckLog(tmp_path / "acklog"))

    replay = queue()
    for start in range(0, 24, 4):
        chunk = tensor_pb2.Chunk(table="q", columns={k: codec.encode(v) for k, v in frames(4, start).items()})
        replay.start_insert(chunk).finish(lambda: True)
    replay.checkpoint()  # 24 waiting
    first = replay.sample("q", 10, 1.0, 0.0, lambda: True)
    assert first.columns["action"][:, 0, ...].ravel().tolist() == list(range(10))
    chunk = tensor_pb2.Chunk(table="q", columns={k: codec.encode(v) for k, v in frames(4, 24).items()})
    replay.start_insert(chunk).finish(lambda: True)
    # crash: 18 waiting (10..27), none of it in a snapshot after the draw
    restarted = queue()
    table = restarted.tables["q"]
    assert table.state().columns["action"][:, 0].tolist() == list(range(10, 28))
    assert table.limiter.inserts - table.limiter.samples - table.limiter.discarded == table.size == 18
    rest = restarted.sample("q", 18, 1.0, 0.0, lambda: True)
    assert sorted(rest.columns["action"][:, 0].ravel().tolist()) == list(range(10, 28))


def test_records_of_a_log_written_with_zlibs_crc32_are_still_read(tmp_path):
    """Logs written before the checksum became CRC-32C (a record kind without its high bit, and
    zlib's CRC-32) restore as before, beside records written now."""
    import struct
    import zlib

    replay = open_replay(tmp_path)
    insert(replay, 0)  # a CRC-32C record
    chunk = tensor_pb2.Chunk(
        table="t",
        columns={k: codec.encode(v) for k, v in frames(4, 4).items()},
        writer_id="w",
        sequence=5,
        priorities=[1.0] * 4,
    )  # fmt: skip (as logged: with priorities)
    payload = chunk.SerializeToString()
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<BQ", 0, 5)))  # as an older version wrote it
    log = replay.ack_log
    with open(log._path(log.generation), "ab") as file:
        file.write(struct.pack("<IIBQ", len(payload), crc, 0, 5) + payload)
    assert stored_steps(open_replay(tmp_path)) == [0, 1, 2, 3, 4, 5, 6, 7]
