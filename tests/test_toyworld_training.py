"""The toy world and the training pipeline: formats, upstream label rules, bad data, a CI-sized run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmduet_core.data.benchmarks import read_benchmark
from mmduet_core.model import IGNORE_INDEX
from mmduet_core.model.checkpoint import load_model
from mmduet_core.model.template import train_tokenizer
from mmduet_core.toyworld import make_toyworld, toy_vocabulary
from mmduet_core.training import TOY_TRAIN, TrainConfig, build_toy_model, train_toy
from mmduet_core.training.streams import (
    DenseVideoCaptioningStreamDataset,
    DuetCollator,
    GroundingStreamDataset,
    MAGQAStreamDataset,
    build_mixture,
)
from mmduet_core.video import write_video


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    counts = make_toyworld(root, seed=3, sizes={"train": 8, "test": 3})
    return root, counts


def test_toyworld_files_and_formats(small_world):
    root, counts = small_world
    assert counts["train"]["videos"] == 8 and counts["test"]["videos"] == 3
    for split in ("train", "test"):
        for kind in ("dvc", "magqa", "grounding", "highlight"):
            examples, errors = read_benchmark(root / "annotations" / split / f"{kind}.json", kind)
            assert examples and not errors
            for e in examples:
                assert (root / "videos" / split / e["video"]).exists()
    gold = [json.loads(x) for x in (root / "annotations/test/highlight_gold.jsonl").read_text().splitlines()]
    assert all(len(s) == 3 and all(0 <= v <= 4 for v in s) for g in gold for s in g["saliency_scores"])
    train_names = {p.name for p in (root / "videos/train").iterdir()}
    assert not train_names & {p.name for p in (root / "videos/test").iterdir()}  # disjoint splits


def test_highlight_queries_have_a_clip_shown_throughout(small_world):
    """QVHighlights-like gold: every highlight query's object fills at least one whole 2 s clip (so each has
    clips an annotator can call VeryGood), and only grounding queries without such a clip are left out."""
    root, _ = small_world
    grounding = json.loads((root / "annotations/test/grounding.json").read_text())
    highlight = {(h["video"], h["query"]) for h in json.loads((root / "annotations/test/highlight.json").read_text())}

    def fills_a_clip(spans):
        return any(s <= 2 * c and 2 * c + 2 <= e for s, e in spans for c in range(int(e // 2) + 1))

    for g in grounding:
        assert ((g["video"], g["query"]) in highlight) == fills_a_clip(g["timestamps"]), g


@pytest.fixture(scope="module")
def oracle_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle")
    make_toyworld(root, seed=0, sizes={"test": 12})
    return root


def test_oracle_relevance_matches_the_rendered_frames(oracle_world):
    """The oracle's colour score is positive exactly when the frame shows that colour (its geometry is the
    renderer's), and is 1.0 only when the whole object is on screen."""
    from mmduet_core.run.toyeval import oracle_records
    from mmduet_core.toyworld import COLOURS, load_split, render_frame

    videos = {v.name: v for v in load_split(oracle_world, "test")}
    for record in oracle_records(oracle_world, "test", "grounding", match="colour")[:20]:
        video = videos[record["question_id"].rsplit("_", 1)[0]]
        example = next(e for e in json.loads((oracle_world / "annotations/test/grounding.json").read_text())
                       if e["question_id"] == record["question_id"])
        rgb = np.array(COLOURS[example["query"].split(" ")[1]], np.uint8)
        for step in record["debug_data"]:
            frame = render_frame(video, step["time"], np.random.default_rng(0))
            shown = (np.abs(frame.astype(int) - rgb).max(-1) <= 5).any()
            assert shown == (step["relevance_score"] > 0), (record["question_id"], step)


def test_oracle_needs_both_colour_and_shape(oracle_world):
    """Perfect relevance nearly solves grounding and scores highest on highlights; ignoring shape or colour
    costs a lot on both, so the toy numbers measure whether a model binds both words of the query."""
    from mmduet_core.run.toyeval import evaluate_oracle

    exact, colour, shape = (evaluate_oracle(oracle_world, "test", m) for m in ("exact", "colour", "shape"))
    assert exact["grounding_R@0.5"] >= 90 and exact["highlight_VeryGood_mAP"] >= 75
    for partial in (colour, shape):
        assert partial["grounding_R@0.5"] < exact["grounding_R@0.5"] - 20
        assert partial["highlight_VeryGood_mAP"] < exact["highlight_VeryGood_mAP"] - 5
    with pytest.raises(ValueError, match="oracle match"):
        evaluate_oracle(oracle_world, "test", "size")


def test_a_world_from_an_older_version_is_remade(tmp_path):
    """A toy world written before the current WORLD_FORMAT (same seed, other files) is remade, every split it
    had; a benchmark folder holding other data is left alone."""
    from mmduet_core.toyworld import WORLD_FORMAT, ensure_splits, prepare_toy_benchmark

    world = tmp_path / "world"
    make_toyworld(world, seed=2, sizes={"test": 2, "val": 1})
    assert ensure_splits(world, 2, {"test": 2}) == {}  # current: nothing to do
    stale = json.loads((world / "world.json").read_text())
    del stale["format"]
    (world / "world.json").write_text(json.dumps(stale))
    (world / "annotations/test/grounding.json").write_text("[]")
    assert set(prepare_toy_benchmark(world, "annotations/test/grounding.json", 2)) == {"test", "val"}
    assert json.loads((world / "world.json").read_text())["format"] == WORLD_FORMAT
    assert json.loads((world / "annotations/test/grounding.json").read_text())
    other = tmp_path / "other"
    (other / "annotations/test").mkdir(parents=True)
    (other / "annotations/test/grounding.json").write_text("[]")
    assert prepare_toy_benchmark(other, "annotations/test/grounding.json") == {}
    assert not (other / "world.json").exists()


def test_toyworld_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_toyworld(a, seed=5, sizes={"train": 2})
    make_toyworld(b, seed=5, sizes={"train": 2})
    for rel in ("annotations/train/dvc_train.json", "annotations/train/grounding.json", "world.json"):
        assert (a / rel).read_text() == (b / rel).read_text()


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(toy_vocabulary() + ["caption one", "caption two"], vocab_size=400, frame_num_tokens=49)


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vids")
    frames = [np.full((32, 32, 3), i * 4, np.uint8) for i in range(26)]  # 13 s at 2 fps
    write_video(root / "v.mp4", frames, 2)
    write_video(root / "g.mp4", [np.zeros((32, 32, 3), np.uint8)] * 26, 2.0472)  # 12.7 s
    return root


def _dataset(cls, tmp_path, video_root, tok, annotations):
    path = tmp_path / "anno.json"
    path.write_text(json.dumps(annotations))
    return cls(video_root, path, tok, frame_fps=2.0, frame_size=32, metadata_path=tmp_path / "meta.json")


def test_dvc_labels_follow_the_spec_example(tmp_path, video_root, tok):
    """Spec §4.2 (fps 2): a caption at 3.2 s with span [0, 4] -> 7 frames 0,0,0,1,1,1,1; the next at 7.0 s with
    span [4, 8] -> 7 frames 0,0,0,0,1,1,1."""
    ds = _dataset(DenseVideoCaptioningStreamDataset, tmp_path, video_root, tok, {"v.mp4": {"0": [
        {"text": "caption one", "time": 3.2, "timespan": [0, 4]},
        {"text": "caption two", "time": 7.0, "timespan": [4, 8]}]}})
    item = ds[0]
    assert item["informative_labels"] == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1]
    assert item["relevance_labels"] == [IGNORE_INDEX] * 14 and len(item["frames"]) == 14
    assert [item["text"][r.start:r.stop] for r in item["learn_ranges"]] == ["caption one<|im_end|>",
                                                                            "caption two<|im_end|>"]


def test_grounding_labels_follow_the_spec_example(tmp_path, video_root, tok):
    """Spec §4.4: fps 2, 12.7 s, spans [2.3, 5.1], [8, 9.6] -> 25 frames: 4 neg, 6 pos, 6 neg, 3 pos, 6 neg."""
    ds = _dataset(GroundingStreamDataset, tmp_path, video_root, tok,
                  [{"video_uid": "g.mp4", "query": "a red square", "timestamps": [[2.3, 5.1], [8, 9.6]]}])
    item = ds[0]
    assert item["relevance_labels"] == [0] * 4 + [1] * 6 + [0] * 6 + [1] * 3 + [0] * 6
    assert item["informative_labels"] == [IGNORE_INDEX] * 25 and item["learn_ranges"] == []


def test_bad_training_data_is_skipped_and_counted(tmp_path, video_root, tok):
    with pytest.warns(UserWarning, match="skipped"):
        ds = _dataset(MAGQAStreamDataset, tmp_path, video_root, tok, [
            {"video_uid": "missing.mp4", "conversation": [{"role": "user", "content": "Q?", "time": 1.0}]},
            {"video_uid": "v.mp4", "conversation": []},
            {"video_uid": "v.mp4", "conversation": [{"role": "user", "content": "Q?", "time": 0.5},
                                                    {"role": "assistant", "content": "caption one", "time": 40.0,
                                                     "timespan": [30, 50]}]},
            {"video_uid": "v.mp4", "conversation": [{"role": "user", "content": "Q?", "time": 0.5},
                                                    {"role": "assistant", "content": "caption one", "time": 3.0,
                                                     "timespan": [1, 4]}]}])
    assert len(ds) == 1
    assert ds.skipped == {"missing or unreadable video": 1, "empty conversation": 1,
                          "reply after the end of the video": 1, "no reply inside the video": 1}
    item = ds[0]
    # frames 0.5-2.5 s; r = int((3.0 - ceil(2.5)) * 2) + 1 = 2 positives before the reply (spec §4.3)
    assert item["informative_labels"] == [0, 0, 0, 1, 1]


def test_collator_labels_reach_the_right_positions(tmp_path, video_root, tok):
    ds = _dataset(DenseVideoCaptioningStreamDataset, tmp_path, video_root, tok, {"v.mp4": {"0": [
        {"text": "caption one", "time": 3.2, "timespan": [0, 4]}]}})
    batch = DuetCollator(tok, 49)([ds[0], ds[0]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    target = tok("caption one<|im_end|>", add_special_tokens=False).input_ids
    learned = labels[labels != IGNORE_INDEX].tolist()
    assert learned == target  # shifted: position t holds token t + 1
    first = (labels != IGNORE_INDEX).nonzero()[0, 0]
    assert ids[first + 1] == target[0]
    ends = (ids == tok.convert_tokens_to_ids("<image>")).nonzero().flatten()[48::49]
    assert batch["informative_labels"][0, ends].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert set(batch) >= {"informative_labels", "relevance_labels", "frames", "position_ids"}
    assert batch["frames"].shape == (14, 3, 32, 32)


@pytest.mark.slow
def test_ci_sized_training_lowers_both_losses_and_round_trips(small_world, tmp_path):
    root, _ = small_world
    config = TrainConfig(**{**TOY_TRAIN.__dict__, "logging_steps": 5, "save_steps": 15})
    result = train_toy(root, tmp_path / "run", config, max_steps=30, progress=False)
    history = result["history"]
    assert len(history) >= 4
    first, last = history[:2], history[-2:]
    for key in ("lm_loss", "video_loss"):
        assert np.mean([h[key] for h in last]) < np.mean([h[key] for h in first]), key
    model, tokenizer = load_model(tmp_path / "run" / "final", device="cpu")
    fresh, _ = build_toy_model(0)
    # the trained heads were saved and loaded (not a fresh random init)
    assert not torch.equal(model.informative_head.weight, fresh.informative_head.weight)
    assert model.frame_num_tokens == 4 and (tmp_path / "run" / "loss_history.json").exists()
    assert any(p.name.startswith("checkpoint-") for p in (tmp_path / "run").iterdir())


def test_mixture_config_and_unknown_class(small_world, tok):
    root, _ = small_world
    ds = build_mixture(root / "datasets.json", tok, root=root, frame_size=32, frame_num_tokens=49)
    assert len(ds.datasets) == 3 and len(ds) > 0
    with pytest.raises(ValueError, match="unknown dataset class"):
        build_mixture([{"class": "NopeDataset", "video_root": "x", "anno_file": "y"}], tok)
