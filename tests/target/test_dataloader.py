"""make_dataloader: BOS-aligned rows, best-fit packing without padding, seeded order."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

BOS = 0


class ListTokenizer:
    """A stand-in tokenizer for synthetic shards: a document "7 7 7" encodes to [7, 7, 7]."""

    def get_bos_token_id(self) -> int:
        return BOS

    def encode(self, text, prepend=None, num_threads=8):
        head = [prepend] if prepend is not None else []
        return [head + [int(t) for t in doc.split()] for doc in text]


def write_split(mod: ModuleType, train_docs: list[list[int]], val_docs: list[list[int]]) -> None:
    data = Path(mod.DATA_DIR)
    data.mkdir(parents=True, exist_ok=True)
    for name, docs in (("shard_00000.parquet", train_docs), (mod.VAL_FILENAME, val_docs)):
        text = [" ".join(map(str, d)) for d in docs]
        pq.write_table(pa.table({"text": text}), data / name)


def full_rows(inputs: torch.Tensor, targets: torch.Tensor) -> list[list[int]]:
    return torch.cat([inputs, targets[:, -1:]], dim=1).tolist()


def test_rows_start_with_bos_and_targets_shift_inputs(prep: ModuleType, tokenizer) -> None:
    """Every row starts with BOS, ids are in the vocabulary, targets = inputs shifted by one."""
    loader = prep.make_dataloader(tokenizer, 4, 64, "train", seed=1, device="cpu")
    vocab = tokenizer.get_vocab_size()
    for _ in range(10):
        x, y, epoch = next(loader)
        assert x.shape == y.shape == (4, 64) and x.dtype == y.dtype == torch.int64
        assert (x[:, 0] == tokenizer.get_bos_token_id()).all()
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert int(x.min()) >= 0 and int(x.max()) < vocab and epoch == 1


def test_rows_are_whole_documents_without_padding(prep: ModuleType, tokenizer) -> None:
    """Rows are concatenated whole documents; only the last piece of a row may be cropped."""
    bos = tokenizer.get_bos_token_id()
    val_docs = pq.read_table(Path(prep.DATA_DIR) / prep.VAL_FILENAME).column("text").to_pylist()
    encoded = {tuple(d) for d in tokenizer.encode(val_docs, prepend=bos)}
    loader = prep.make_dataloader(tokenizer, 8, 128, "val", device="cpu")
    cropped = whole = 0
    for _ in range(6):
        for row in full_rows(*next(loader)[:2]):
            starts = [i for i, t in enumerate(row) if t == bos]
            assert starts[0] == 0
            pieces = [tuple(row[a:b]) for a, b in zip(starts, [*starts[1:], len(row)], strict=True)]
            for piece in pieces[:-1]:
                assert piece in encoded, "a document inside a row is incomplete"
            whole += len(pieces) - 1
            if pieces[-1] in encoded:
                whole += 1
            else:
                assert any(d[: len(pieces[-1])] == pieces[-1] for d in encoded)
                cropped += 1
    assert whole > 0 and cropped > 0


def test_best_fit_packing_and_crop_only_when_nothing_fits(fresh_prepare) -> None:
    """The longest document that fits goes next; a crop happens only when none fits."""
    mod = fresh_prepare("smoke")
    a, b, c, d, e = [1] * 5, [2] * 4, [3] * 3, [4] * 2, [5] * 6  # +BOS: 6, 5, 4, 3, 7
    write_split(mod, [a, b, c, d, e], [[9] * 20])
    loader = mod.make_dataloader(ListTokenizer(), 1, 9, "train", buffer_size=5, device="cpu")
    rows = [full_rows(*next(loader)[:2])[0] for _ in range(4)]
    # row of 10: the 7-long doc then the 3-long doc fills it exactly (first-fit would crop)
    assert rows[0] == [BOS, *e, BOS, *d]
    assert rows[1] == [BOS, *e, BOS, *d]  # second epoch refilled the buffer
    assert rows[2] == [BOS, *a, BOS, *c]  # 6 + 4
    assert rows[3] == [BOS, *e, BOS, *d]  # the refill brought a 7-long document back
    assert all(b[0] not in row for row in rows)  # the 5-long one never fitted best
    # a document is cropped only when none fits, and the crop fills the row exactly
    mod2 = fresh_prepare("smoke", root=Path(mod.CACHE_DIR).parent / "other")
    write_split(mod2, [[5] * 11, [6] * 3], [[9] * 20])  # +BOS: 12 (never fits), 4
    x, y, _ = next(
        mod2.make_dataloader(ListTokenizer(), 1, 9, "train", buffer_size=1, device="cpu")
    )
    assert full_rows(x, y)[0] == [BOS, 6, 6, 6, BOS, 5, 5, 5, 5, 5]


def test_epoch_counts_passes_over_the_data(fresh_prepare) -> None:
    """The epoch number grows when the split has been read completely."""
    mod = fresh_prepare("smoke")
    write_split(mod, [[1] * 9, [2] * 9], [[9] * 9])
    loader = mod.make_dataloader(ListTokenizer(), 1, 9, "train", buffer_size=1, device="cpu")
    assert [next(loader)[2] for _ in range(6)] == [1, 1, 2, 2, 3, 3]


def test_seed_sets_training_order_and_never_validation(prep: ModuleType, tokenizer) -> None:
    """The same seed gives the same training batches, another seed others; val ignores it."""

    def first(split: str, seed: int | None) -> torch.Tensor:
        loader = prep.make_dataloader(tokenizer, 4, 64, split, 64, seed=seed, device="cpu")
        return next(loader)[0]

    assert torch.equal(first("train", 1), first("train", 1))
    assert not torch.equal(first("train", 1), first("train", 2))
    assert not torch.equal(first("train", 1), first("train", None))
    assert torch.equal(first("val", 1), first("val", 2))


def test_bad_arguments_are_rejected(prep: ModuleType, tokenizer) -> None:
    """An unknown split or an empty batch shape raises a clear ValueError."""
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        next(prep.make_dataloader(tokenizer, 2, 8, "test"))
    with pytest.raises(ValueError, match="B=0"):
        next(prep.make_dataloader(tokenizer, 0, 8, "val"))


def test_missing_data_names_the_fix(fresh_prepare) -> None:
    """Without prepared shards the dataloader says to run prepare.py."""
    mod = fresh_prepare("smoke")
    with pytest.raises(FileNotFoundError, match=r"run prepare\.py first"):
        next(mod.make_dataloader(ListTokenizer(), 1, 8, "train", device="cpu"))
