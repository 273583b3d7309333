"""DuetSession: upstream's token sequence, the exact fast path, policies, KV window."""

from __future__ import annotations

import resource

import pytest
import torch

from mmduet_core.model import DuetModel, positive_probability
from mmduet_core.model.checkpoint import tiny_config
from mmduet_core.model.template import DEFAULT_SYSTEM_PROMPT, train_tokenizer
from mmduet_core.stream import DuetSession, DuetSettings, PolicyState, ResponsePolicy

S, E = "<|im_start|>", "<|im_end|>"


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([DEFAULT_SYSTEM_PROMPT, "What is happening? A red car drives away. Who is there?"] * 3,
                           vocab_size=320)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return DuetModel(tiny_config(len(tok), tok.convert_tokens_to_ids("<image>"))).eval()


@pytest.fixture(scope="module")
def frames(model):
    torch.manual_seed(1)
    with torch.no_grad():
        return model.encode_frames(torch.randint(0, 256, (24, 3, 54, 54), dtype=torch.uint8))


def _session(model, tok, policy, **kw):
    kw.setdefault("max_new_tokens", 5)
    return DuetSession(model, tok, policy, fps=2.0, record_tokens=True, **kw)


def _text(tok, session):
    return tok.decode(session.token_log, skip_special_tokens=False).replace("<image>" * 49, "[F]")


def test_faithful_sequence_query_first(model, tok, frames):
    s = _session(model, tok, ResponsePolicy("prob", 1.0))
    s.add_user_message("What is happening?", 0.0)
    list(s.push_frames(frames[:3]))
    # upstream: the query goes in first, so the system prompt is never fed
    assert _text(tok, s) == f"\n{S}user\nWhat is happening?{E}\n{S}stream\n[F][F][F]"


def test_faithful_sequence_frame_first_then_query(model, tok, frames):
    s = _session(model, tok, ResponsePolicy("prob", 1.0))
    s.add_user_message("Who is there?", 1.0)
    list(s.push_frames(frames[:4]))
    # system prompt, frames without a stream header, then the stream-closing query form at t = 1.0
    assert _text(tok, s) == (f"{S}system\n{DEFAULT_SYSTEM_PROMPT}{E}[F][F]{E}\n{S}user\nWho is there?{E}\n"
                             f"{S}stream\n[F][F]")
    assert [st.user_message for st in s.steps] == [None, None, "Who is there?", None]


def _fire_once_at(session, index):
    """Make the session reply exactly at frame `index` (a threshold on random scores would be fragile)."""
    calls = []
    session.policy.decide = lambda inf, rel: calls.append(1) or len(calls) == index + 1
    return session


def test_faithful_sequence_kept_and_removed_replies(model, tok, frames):
    kept = _fire_once_at(_session(model, tok, ResponsePolicy("prob", 0.0)), 1)
    kept.add_user_message("What is happening?", 0.0)
    list(kept.push_frames(frames[:3]))
    reply_ids = kept.tokenizer(kept.responses[-1]["content"], add_special_tokens=False).input_ids
    assert kept.responses[-1]["role"] == "assistant" and kept.responses[-1]["time"] == 0.5
    text = _text(tok, kept)
    head = f"\n{S}user\nWhat is happening?{E}\n{S}stream\n[F][F]{E}\n{S}assistant\n"
    assert text.startswith(head)
    # the reply stays; its last token (not fed while generating) and a stream header precede the next frame
    assert text.endswith(f"\n{S}stream\n[F]") and len(reply_ids) >= 1
    removed = _fire_once_at(_session(model, tok, ResponsePolicy("prob", 0.0, remove_assistant_turns=True)), 1)
    removed.add_user_message("What is happening?", 0.0)
    removed.add_user_message("Who is there?", 1.0)
    list(removed.push_frames(frames[:4]))
    # the reply is cropped out; the query after it uses the plain form, leaving the stream turn unclosed
    assert _text(tok, removed) == (f"\n{S}user\nWhat is happening?{E}\n{S}stream\n[F][F]\n{S}user\nWho is there?{E}"
                                   f"\n{S}stream\n[F][F]")


def test_clean_context_is_well_formed(model, tok, frames):
    s = _fire_once_at(_session(model, tok, ResponsePolicy("prob", 0.0, remove_assistant_turns=True), context="clean"), 1)
    s.add_user_message("What is happening?", 0.0)
    s.add_user_message("Who is there?", 1.0)
    list(s.push_frames(frames[:4]))
    assert _text(tok, s) == (f"{S}system\n{DEFAULT_SYSTEM_PROMPT}{E}\n{S}user\nWhat is happening?{E}\n{S}stream\n"
                             f"[F][F]{E}\n{S}user\nWho is there?{E}\n{S}stream\n[F][F]")
    frame_first = _session(model, tok, ResponsePolicy("prob", 1.0), context="clean")
    list(frame_first.push_frames(frames[:2]))
    assert _text(tok, frame_first) == f"{S}system\n{DEFAULT_SYSTEM_PROMPT}{E}\n{S}stream\n[F][F]"


@pytest.mark.parametrize("policy", [
    ResponsePolicy("prob", 1.0),  # grounding: never fires
    ResponsePolicy("sum", 2.0, remove_assistant_turns=True),  # YouCook2-style
    ResponsePolicy("prob", 0.45),  # kept replies, prob mode
    ResponsePolicy("sum", 1.5, ("informative_score", "relevance_score")),  # kept, summed heads
], ids=["grounding", "rm-sum", "kept-prob", "kept-sum-both"])
def test_fast_path_equals_sequential(model, tok, frames, policy):
    runs = {}
    for chunk in (1, 32):
        s = _session(model, tok, policy, chunk_frames=chunk)
        s.add_user_message("What is happening?", 0.0)
        s.add_user_message("Who is there?", 3.0)
        list(s.push_frames(frames))
        runs[chunk] = s
    seq, fast = runs[1], runs[32]
    for a, b in zip(seq.steps, fast.steps, strict=True):
        assert abs(a.informative - b.informative) < 1e-4 and abs(a.relevance - b.relevance) < 1e-4
        assert a.time == b.time and a.reply == b.reply
    assert seq.responses == fast.responses
    assert seq.token_log == fast.token_log
    if policy.can_reply:
        assert any(r["role"] == "assistant" for r in seq.responses)


def test_session_scores_equal_one_forward_over_its_token_sequence(model, tok, frames):
    """Independent of the cache logic: feed the logged sequence in one forward and read the heads."""
    s = _session(model, tok, ResponsePolicy("prob", 0.45), chunk_frames=32)
    s.add_user_message("What is happening?", 0.0)
    list(s.push_frames(frames[:10]))
    ids = torch.tensor([s.token_log])
    image = ids[0] == model.config.image_token_id
    with torch.no_grad():
        out = model(input_ids=ids, frame_embeds=frames[:10], logits_to_keep=1)
    ends = image.nonzero().flatten()[48::49]
    expected = positive_probability(out.informative_logits[0, ends])
    got = torch.tensor([st.informative for st in s.steps])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_policies_by_hand():
    prob = PolicyState(DuetSettings(mode="prob", reply_threshold=0.5))
    assert [prob.decide(p, 0) for p in (0.5, 0.51, 0.9)] == [False, True, True]  # strict, may repeat
    both = PolicyState(DuetSettings(reply_threshold=1.0, score_heads=("informative_score", "relevance_score")))
    assert both.decide(0.6, 0.5) is True and DuetSettings(reply_threshold=1.0).can_reply is False
    assert DuetSettings(mode="never").can_reply is False
    summed = PolicyState(DuetSettings(mode="sum", reply_threshold=1.0))
    assert [summed.decide(p, 0) for p in (0.4, 0.4, 0.4, 0.4, 0.4, 0.3)] == [False, False, True, False, False, True]
    z = PolicyState(DuetSettings(mode="z", reply_threshold=1.0, z_warmup_frames=3, z_window=20))
    decisions = [z.decide(p, 0) for p in (0.9, 0.1, 0.2, 0.1, 0.2, 0.9)]
    # silent for 3 frames; then mean + 1 std of the previous scores: frame 3: 0.1 vs 0.4+0.36 -> no; frame 5:
    # 0.9 vs mean(0.9,.1,.2,.1,.2)=0.3 + std 0.303 -> yes
    assert decisions == [False, False, False, False, False, True]
    with pytest.raises(ValueError, match="mode must be one of"):
        DuetSettings(mode="loud")
    with pytest.raises(ValueError, match="score_heads"):
        DuetSettings(score_heads=("volume",))
    # the old name still builds the same settings
    assert ResponsePolicy("sum", 2.0, remove_assistant_turns=True) == DuetSettings(
        mode="sum", reply_threshold=2.0, remove_assistant_turns=True)


def test_repetition_penalty_uses_every_reply_of_the_video(model, tok, frames):
    s = _session(model, tok, ResponsePolicy("sum", 1.0, remove_assistant_turns=True), repetition_penalty=1.3)
    s.add_user_message("What is happening?", 0.0)
    list(s.push_frames(frames[:8]))
    replies = [r for r in s.responses if r["role"] == "assistant"]
    assert len(replies) >= 2 and len(s.replier.history) >= len(replies)


def test_suppress_repeats_and_decode_cleanup(model, tok, frames):
    s = _session(model, tok, ResponsePolicy("prob", 0.0, remove_assistant_turns=True, suppress_repeats=True))
    list(s.push_frames(frames[:6]))
    texts = [r["content"] for r in s.responses if r["role"] == "assistant"]
    assert all(a != b for a, b in zip(texts, texts[1:], strict=False))
    assert tok.clean_up_tokenization("hello , world . is n't it ? I 'm") == "hello, world. isn't it? I'm"


def test_record_schema(model, tok, frames):
    s = _session(model, tok, ResponsePolicy("prob", 1.0))
    s.add_user_message("What is happening?", 0.0)
    list(s.push_frames(frames[:3]))
    rec = s.to_record("q7", 1.23456)
    assert rec["question_id"] == "q7" and rec["video_duration"] == 1.235
    assert rec["model_response_list"] == [{"time": 0.0, "content": "What is happening?", "role": "user"}]
    assert [d["time"] for d in rec["debug_data"]] == [0.0, 0.5, 1.0]
    assert all(round(d["relevance_score"], 3) == d["relevance_score"] for d in rec["debug_data"])


def test_kv_window_matches_full_cache_while_it_fits(model, tok, frames):
    full = _session(model, tok, ResponsePolicy("prob", 1.0))
    windowed = _session(model, tok, ResponsePolicy("prob", 1.0), kv_window_frames=30)
    for s in (full, windowed):
        s.add_user_message("What is happening?", 0.0)
        list(s.push_frames(frames))
    assert [st.informative for st in full.steps] == pytest.approx([st.informative for st in windowed.steps], abs=1e-5)


def test_kv_window_positions_after_eviction(model, tok, frames):
    """Evicted frames leave the cache, kept ones keep their absolute positions: the newest frame's first-layer
    keys (which depend only on the token and its RoPE position) equal those of a run without a window."""
    windowed = _session(model, tok, ResponsePolicy("prob", 1.0), kv_window_frames=4, chunk_frames=1)
    full = _session(model, tok, ResponsePolicy("prob", 1.0), chunk_frames=1)
    for s in (windowed, full):
        s.add_user_message("What is happening?", 0.0)
        list(s.push_frames(frames[:12]))
    prefix = windowed.window.prefix_end
    assert windowed.cache.get_seq_length() == prefix + 4 * 49 and windowed.position == full.position
    newest_windowed = windowed.cache.layers[0].keys[..., -49:, :]
    newest_full = full.cache.layers[0].keys[..., -49:, :]
    torch.testing.assert_close(newest_windowed, newest_full)
    # the prefix (system/query) is kept as it was
    torch.testing.assert_close(windowed.cache.layers[0].keys[..., :prefix, :], full.cache.layers[0].keys[..., :prefix, :])
    # and the evicted frame 0 is gone: the first frame kept is frame 8's keys
    torch.testing.assert_close(windowed.cache.layers[0].keys[..., prefix:prefix + 49, :],
                               full.cache.layers[0].keys[..., prefix + 8 * 49:prefix + 9 * 49, :])


@pytest.mark.slow
def test_kv_window_keeps_memory_flat(tok):
    """Resident memory over a 20x longer stream grows < 10 % with the window on."""
    torch.manual_seed(0)
    big = DuetModel(tiny_config(len(tok), tok.convert_tokens_to_ids("<image>"), hidden_size=256, num_layers=4,
                                num_heads=8, num_kv_heads=8)).eval()
    embeds = torch.randn(1, 49, 256)
    s = DuetSession(big, tok, ResponsePolicy("prob", 1.0), kv_window_frames=32, chunk_frames=8)
    s.add_user_message("What is happening?", 0.0)

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    def run(n):
        for _ in range(n // 8):
            list(s.push_frames(embeds.expand(8, -1, -1)))

    run(80)
    before = rss_mb()
    run(1520)  # 20x the first 80 frames in total
    after = rss_mb()
    per_frame_kv_mb = 4 * 2 * 8 * 32 * 49 * 4 / 2**20
    assert after < 1.10 * before, f"{before:.0f} MB -> {after:.0f} MB (unwindowed would add {1520 * per_frame_kv_mb:.0f} MB)"
    assert s.cache.get_seq_length() <= s.window.prefix_end + 32 * 49


@pytest.mark.parametrize("settings", [ResponsePolicy("sum", 1.5, remove_assistant_turns=True), ResponsePolicy("prob", 0.45)],
                         ids=["removed", "kept"])
def test_message_sent_while_reading_steps_is_read_before_the_next_frame(model, tok, frames, settings):
    """A message added after seeing step k of a prefilled segment is read before frame k + 1, exactly as a
    sequential session given that message at frame k + 1's time."""
    live = _session(model, tok, settings, chunk_frames=32)
    live.add_user_message("What is happening?", 0.0)
    for step in live.push_frames(frames[:12]):
        if step.frame_index == 4:
            live.add_user_message("Who is there?")  # now: the next frame's time
    reference = _session(model, tok, settings, chunk_frames=1)
    reference.add_user_message("What is happening?", 0.0)
    reference.add_user_message("Who is there?", 2.5)
    list(reference.push_frames(frames[:12]))
    assert live.steps[5].user_message == "Who is there?"
    assert live.token_log == reference.token_log
    live_record, reference_record = live.to_record("q", 6.0), reference.to_record("q", 6.0)
    assert live_record["model_response_list"] == reference_record["model_response_list"]
    assert [s.informative for s in live.steps] == pytest.approx([s.informative for s in reference.steps], abs=1e-5)


def test_stopping_early_leaves_the_session_at_the_last_step_read(model, tok, frames):
    settings = ResponsePolicy("sum", 1.5, remove_assistant_turns=True)
    whole = _session(model, tok, settings)
    whole.add_user_message("What is happening?", 0.0)
    list(whole.push_frames(frames[:10]))
    parts = _session(model, tok, settings)
    parts.add_user_message("What is happening?", 0.0)
    for step in parts.push_frames(frames[:10]):
        if step.frame_index == 3:
            break
    assert parts.frame_index == 4 and len(parts.steps) == 4
    list(parts.push_frames(frames[4:10]))
    assert parts.token_log == whole.token_log and parts.responses == whole.responses


@pytest.mark.parametrize("time", [float("nan"), float("inf"), "1.0"])
def test_message_times_must_be_finite_numbers(model, tok, time):
    s = _session(model, tok, ResponsePolicy("prob", 1.0))
    with pytest.raises(ValueError, match="finite number of seconds"):
        s.add_user_message("Who is there?", time)


@pytest.mark.timeout(60)
def test_a_message_far_in_the_future_is_never_read_and_never_hangs(model, tok, frames):
    s = _session(model, tok, ResponsePolicy("prob", 1.0))
    s.add_user_message("Who is there?", 1e12)
    list(s.push_frames(frames[:4]))
    assert [st.user_message for st in s.steps] == [None] * 4 and s.pending


def test_reply_tokens_are_written_into_the_cache_not_copied(model, tok, frames):
    """Decoding appends each token in place: the cache's buffer is the same storage before and after a reply."""
    s = _session(model, tok, ResponsePolicy("prob", 1.0), max_new_tokens=20)
    s.add_user_message("What is happening?", 0.0)
    list(s.push_frames(frames[:4]))
    layer = s.cache.layers[0]
    storage, length = layer.keys.untyped_storage().data_ptr(), layer.get_seq_length()
    text, fed, _ = s.replier.in_context(s.cache, s.position)
    assert layer.get_seq_length() == length + len(fed) and len(fed) > 2
    assert layer.keys.untyped_storage().data_ptr() == storage


def test_a_record_reads_back_as_the_sessions_steps(model, tok, frames):
    from mmduet_core.evaluation.records import steps_from_record

    s = _session(model, tok, ResponsePolicy("sum", 1.5, remove_assistant_turns=True))
    s.add_user_message("What is happening?", 0.0)
    s.add_user_message("Who is there?", 1.2)  # read at the first frame at or after 1.2 s: frame 3 (1.5 s)
    list(s.push_frames(frames[:8]))
    back = steps_from_record(s.to_record("q", 4.0))
    assert [(b.frame_index, b.time, b.reply, b.user_message) for b in back] == \
        [(a.frame_index, a.time, a.reply, a.user_message) for a in s.steps]
    assert [b.informative for b in back] == pytest.approx([a.informative for a in s.steps], abs=5e-4)
    assert any(a.reply for a in s.steps) and s.steps[3].user_message == "Who is there?"
