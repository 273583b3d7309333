"""Caption scorers shared by every dense-captioning evaluation in a process: METEOR 1.5 and the PTB tokenizer
(pycocoevalcap's jars, Java) with memoised results, and pycocoevalcap's CIDEr-D.

METEOR's Java process loads a 60 MB paraphrase table when it starts, so one process serves every evaluation of
a kernel or CLI run (started at first need, closed at exit). What is memoised is what METEOR itself is built
from: the statistics line of each (hypothesis, reference) pair, the score of each statistics line, and the
aggregate of each list of statistics lines (a call's aggregate is computed from summed statistics, not the mean
of its pair scores). Re-scoring known pairs therefore returns the same numbers without Java; with a cache file
they survive the process (sweeps, an explorer).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from ..errors import InputError

METEOR_ARGS = ("-", "-", "-stdio", "-l", "en", "-norm")
CACHE_FORMAT = "meteor-1.5 -l en -norm; ptb-3.4.1; cider-d"


def _require_java() -> None:
    if shutil.which("java") is None:
        raise InputError("METEOR and the PTB tokenizer need Java on PATH (see README: Java)")


def _jar(module: str, name: str) -> Path:
    import importlib

    return Path(importlib.import_module(f"pycocoevalcap.{module}").__file__).parent / name


class ScoreCache:
    """Memoised tokens, METEOR statistics lines, pair scores and aggregates; optionally appended to a file."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.stats: dict[str, str] = {}  # key: hypothesis + "\x1f" + references joined by "\x1e"
        self.scores: dict[str, float] = {}  # key: a statistics line
        self.aggregates: dict[str, float] = {}  # key: sha1 of the call's statistics lines
        self.cider: dict[str, float] = {}  # key: sha1 of a CIDEr call's (references, hypotheses)
        self.path: Path | None = None
        self._new: list[tuple[str, str, object]] = []

    def _tables(self) -> dict[str, dict]:
        return {"t": self.tokens, "s": self.stats, "p": self.scores, "a": self.aggregates, "c": self.cider}

    def load(self, path: str | Path | None) -> None:
        """Use this cache file from now on (None: memory only): read it (missing is fine), and queue what is
        memoised but not in it yet, so the next `flush` completes it."""
        self.flush()
        self.path = None if path is None else Path(path)
        if self.path is None:
            return
        tables, known = self._tables(), set()
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        for line_no, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                if line_no == 1 and not (isinstance(row, dict) and row.get("format") == CACHE_FORMAT):
                    raise ValueError(f"not a caption score cache ({CACHE_FORMAT})")
                if line_no > 1:
                    tables[row[0]][row[1]] = row[2]
                    known.add((row[0], row[1]))
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise InputError(f"{self.path}:{line_no}: {exc}") from None
        self._new = [(t, k, v) for t, table in tables.items() for k, v in table.items() if (t, k) not in known]

    def add(self, table: str, key: str, value) -> None:
        self._tables()[table][key] = value
        if self.path is not None:
            self._new.append((table, key, value))

    def save(self, path: str | Path) -> Path:
        """Write everything memoised so far to a new cache file (for another process or machine)."""
        path = Path(path)
        rows = [(t, k, v) for t, table in self._tables().items() for k, v in table.items()]
        path.write_text("".join(json.dumps(r) + "\n" for r in [{"format": CACHE_FORMAT}, *rows]))
        return path

    def flush(self) -> None:
        """Append what was computed since the last flush to the cache file."""
        if self.path is None or not self._new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a") as f:
            if fresh:
                f.write(json.dumps({"format": CACHE_FORMAT}) + "\n")
            f.writelines(json.dumps(row) + "\n" for row in self._new)
        self._new = []


class Meteor:
    """METEOR 1.5 (`-l en -norm`) in one long-lived Java process, started at the first pair it has not seen."""

    def __init__(self, cache: ScoreCache | None = None) -> None:
        self.cache = cache or ScoreCache()
        self.lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self.java_calls = 0  # requests sent to Java (for tests and timings)

    # -- the process ----------------------------------------------------------------------------------------
    def _process(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            _require_java()
            jar = _jar("meteor.meteor", "meteor-1.5.jar")
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - kept open as long as the process
            self._proc = subprocess.Popen(["java", "-jar", "-Xmx2G", jar.name, *METEOR_ARGS], cwd=jar.parent,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        return self._proc

    def _exchange(self, lines: list[str], answers: int) -> list[str]:
        """Send request lines (from a thread, so a long batch cannot fill both pipes) and read `answers` lines."""
        proc = self._process()
        self.java_calls += 1

        def write() -> None:
            try:
                proc.stdin.write("".join(line + "\n" for line in lines).encode())
                proc.stdin.flush()
            except BrokenPipeError:
                pass  # reported below through the missing answers

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        out = [proc.stdout.readline().decode().strip() for _ in range(answers)]
        writer.join()
        if any(not line for line in out):
            self._stderr.seek(0)
            detail = self._stderr.read().decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"METEOR stopped answering: {detail[0]}")
        return out

    def close(self) -> None:
        """Stop the Java process (a later call starts a new one); memoised results are kept."""
        with self.lock:
            self.cache.flush()
            if self._proc is not None:
                with suppress(OSError):  # the process may already be gone
                    self._proc.stdin.close()
                self._proc.kill()
                self._proc.wait()
                self._proc.stdout.close()
                self._stderr.close()
                self._proc = None

    # -- memoised pieces ------------------------------------------------------------------------------------
    def statistics(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        """METEOR statistics line of each (hypothesis, references) pair."""
        keys = [_pair_key(h, refs) for h, refs in pairs]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache.stats))
        if todo:
            first = dict(zip(keys, pairs, strict=True))
            lines = [" ||| ".join(("SCORE", *map(_one_line, first[k][1]), _clean(first[k][0]))) for k in todo]
            for key, stats in zip(todo, self._exchange(lines, len(lines)), strict=True):
                self.cache.add("s", key, stats)
        return [self.cache.stats[k] for k in keys]

    def evaluate(self, stats: Sequence[str]) -> tuple[float, list[float]]:
        """(aggregate, per-line scores) of statistics lines, as one METEOR `EVAL` call returns them."""
        agg_key = _aggregate_key(stats)
        if not self._known(stats):
            out = self._exchange(["EVAL ||| " + " ||| ".join(stats)], len(stats) + 1)
            for line, value in zip(stats, out[:-1], strict=True):
                self.cache.add("p", line, float(value))
            self.cache.add("a", agg_key, float(out[-1]))
        return self.cache.aggregates[agg_key], [self.cache.scores[s] for s in stats]

    def prefetch(self, calls: Sequence[Sequence[tuple[str, Sequence[str]]]], pairs: Sequence[tuple[str, str]] = ()
                 ) -> None:
        """Memoise what `compute_score` would compute for each call of (hypothesis, references) pairs, and what
        `pair_scores` would for `pairs`, in two exchanges with Java (statistics, then every EVAL at once) instead
        of one per call: an evaluation's many small calls cost one round trip."""
        with self.lock:
            sizes = [len(call) for call in calls]
            stats = self.statistics([pair for call in calls for pair in call] + [(h, [r]) for h, r in pairs])
            per_call, start = [], 0
            for size in sizes:
                per_call.append(stats[start:start + size])
                start += size
            singles = [[s] for s in dict.fromkeys(stats[start:]) if s not in self.cache.scores]
            todo = [s for s in per_call if s and not self._known(s)] + singles
            lines = ["EVAL ||| " + " ||| ".join(s) for s in todo]
            out = self._exchange(lines, sum(len(s) + 1 for s in todo)) if todo else []
            for s in todo:
                answer, out = out[: len(s) + 1], out[len(s) + 1:]
                for line, value in zip(s, answer[:-1], strict=True):
                    self.cache.add("p", line, float(value))
                self.cache.add("a", _aggregate_key(s), float(answer[-1]))

    def _known(self, stats: Sequence[str]) -> bool:
        return _aggregate_key(stats) in self.cache.aggregates and all(s in self.cache.scores for s in stats)

    # -- the two uses ---------------------------------------------------------------------------------------
    def compute_score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        """pycocoevalcap's interface: gts {id: [references]}, res {id: [hypothesis]}; pairs in dict order."""
        if gts.keys() != res.keys():
            raise ValueError("METEOR: references and hypotheses need the same ids")
        if not gts:
            return 0.0, []
        with self.lock:
            return self.evaluate(self.statistics([(res[i][0], gts[i]) for i in gts]))

    def pair_scores(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Score of each (hypothesis, reference) pair (the aggregate is not needed, so unseen lines go in one
        EVAL call of the distinct lines)."""
        if not pairs:
            return []
        with self.lock:
            stats = self.statistics([(h, [r]) for h, r in pairs])
            todo = list(dict.fromkeys(s for s in stats if s not in self.cache.scores))
            if todo:
                self.evaluate(todo)
            return [self.cache.scores[s] for s in stats]


def _one_line(text: str) -> str:
    return text.replace("\n", " ")  # the protocol is one request per line


def _clean(hypothesis: str) -> str:
    """pycocoevalcap's hypothesis clean-up (no field separators, no double spaces)."""
    return _one_line(hypothesis).replace("|||", "").replace("  ", " ")


def _aggregate_key(stats: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(stats).encode()).hexdigest()


def _pair_key(hypothesis: str, references: Sequence[str]) -> str:
    return hypothesis + "\x1f" + "\x1e".join(references)


@contextmanager
def _quiet_stderr():
    """The PTB tokenizer's Java process prints a progress line on the inherited stderr; send it to /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _remove_nonascii(text: str) -> str:
    return "".join(c for c in text if ord(c) < 128)


class CaptionScorers:
    """CIDEr-D, a memoised METEOR and a memoised PTB tokenizer over one `ScoreCache`."""

    def __init__(self) -> None:
        from pycocoevalcap.cider.cider import Cider

        self.cache = ScoreCache()
        self.meteor = Meteor(self.cache)
        self.cider = Cider()

    def use_cache_file(self, path: str | Path | None) -> None:
        """Read and extend this cache file from now on (None: memory only)."""
        if path is None or self.cache.path is None or Path(path) != self.cache.path:
            self.cache.load(path)

    def tokenize(self, texts: Iterable[str]) -> dict[str, str]:
        """{text: PTB tokens (lower case, punctuation removed)}; one Java call for the texts not seen yet."""
        texts = set(texts)
        blank = {t for t in texts if not t.strip()}  # the tokenizer drops blank lines: keep them out of the call
        todo = sorted(t for t in texts - blank if t not in self.cache.tokens)
        if todo:
            _require_java()
            from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

            with _quiet_stderr():
                out = PTBTokenizer().tokenize({str(k): [{"caption": _remove_nonascii(t)}] for k, t in enumerate(todo)})
            for k, text in enumerate(todo):
                self.cache.add("t", text, out[str(k)][0])
        return {t: "" if t in blank else self.cache.tokens[t] for t in texts}

    def cider_score(self, gts: dict, res: dict) -> float:
        """CIDEr-D of one call (its IDF comes from that call's references, so a call is memoised as a whole);
        0 without pairs."""
        if not res:
            return 0.0
        key = hashlib.sha1(json.dumps([gts, res]).encode()).hexdigest()
        if key not in self.cache.cider:
            self.cache.add("c", key, float(self.cider.compute_score(gts, res)[0]))
        return self.cache.cider[key]

    def close(self) -> None:
        self.meteor.close()


_SHARED: CaptionScorers | None = None


def shared_scorers(cache_path: str | Path | None = None) -> CaptionScorers:
    """The process's scorers (METEOR started once, closed at exit); `cache_path` backs them with a cache file
    until the next call names another (or None)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = CaptionScorers()
        atexit.register(_SHARED.close)
    _SHARED.use_cache_file(cache_path)
    return _SHARED
