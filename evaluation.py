"""Accuracy of an accuracy-mode run: ROUGE and tokens per sample from LoadGen's accuracy log.

Same flags, numbers and printed dict as the MLPerf llama2-70b reference evaluate-accuracy.py, but
fully offline (rouge_score and an installed Punkt model instead of downloads at run time), several
times faster (accuracy/rouge.py), and with a pass/fail verdict against accuracy_targets.yaml:

    python evaluation.py --mlperf-accuracy-file build/logs/mlperf_log_accuracy.json \
        --dataset-file open_orca.pkl [--checkpoint-path MODEL] [--model-name llama2-70b]

A llama3.1-8b set (cnn_eval.json from processcnndm.py) is scored as the reference's
language/llama3.1-8b/evaluation.py scores it: ROUGE-1/2/L/Lsum, gen_len (characters of the decoded
outputs) and gen_num, judged against the round's targets (mlsubmit/registry.py; --model-name
llama3_1-8b-edge for the edge set); the embedded model on the CNN-DailyMail demo is judged against
its own recorded targets (gemma3-270m-q4_k_m-cnndm).

Prints the reference's dict (the submission checker parses it with regexes), writes accuracy.txt
and accuracy.json next to the accuracy log (a new name when they exist already) and exits 1 when
the chosen level (--accuracy-level, default 99) fails. See docs/accuracy.md.
"""
import argparse
import csv
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accuracy.mlperf_log import DTYPES, decode_ids, read_entries
from accuracy.reasoning import BENCHMARKS as REASONING_BENCHMARKS
from accuracy.rouge import ROUGE_TYPES, RougeScores, score_pairs
from accuracy.sentences import newline_sentences_chunk, splitter_name
from accuracy.targets import LEVELS, RECORDED_METRICS, TARGETS_FILE, get_targets, load_targets, record_targets
from common.errors import HarnessError, exit_on_error
from common.files import make_folder, temp_file_beside
from common.parallel import chunked_map
from inputs.models import DEFAULT_MODEL_NAME
from mlsubmit import registry

log = logging.getLogger("evaluation")

LLAMA2_70B = "llama2-70b"
LLAMA31_8B = "llama3_1-8b"
CNNDM_SUFFIX = "-cnndm"


@dataclass
class Response:
    """One de-duplicated entry of the accuracy log."""
    qsl_idx: int
    token_ids: np.ndarray


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--checkpoint-path", default=None,
                   help="model folder or .gguf whose tokenizer decodes the outputs (default: the embedded Gemma model)")
    p.add_argument("--mlperf-accuracy-file", required=True, help="path to mlperf_log_accuracy.json")
    p.add_argument("--dataset-file", required=True,
                   help="the processed OpenOrca pickle (or the same table as .parquet / .jsonl)")
    p.add_argument("--dtype", default="int32", choices=sorted(DTYPES),
                   help="dtype of the token ids in the accuracy log (the SUT writes int32)")
    p.add_argument("--model-name", default=None,
                   help="targets to check, from accuracy_targets.yaml (default: llama2-70b for a Llama-2-70B "
                        f"checkpoint, {DEFAULT_MODEL_NAME} for the embedded model, else the checkpoint's name)")
    p.add_argument("--accuracy-level", default="99", choices=sorted(LEVELS),
                   help="which target level decides the exit status (both are reported)")
    p.add_argument("--targets-file", default=None,
                   help=f"accuracy targets YAML to check against (default: {TARGETS_FILE.name} of this project); "
                        "with --record-targets, the file to add them to (default: accuracy_targets.yaml in --log-dir)")
    p.add_argument("--record-targets", metavar="NAME", default=None,
                   help="instead of checking, store this run's scores as the targets of NAME")
    p.add_argument("--log-dir", "--output-log-dir", dest="log_dir", default=None,
                   help="where accuracy.txt / accuracy.json go (default: the accuracy log's folder)")
    p.add_argument("--per-sample-csv", default=None,
                   help="also write qsl_idx, token count, per-sample ROUGE and the decoded text to this CSV")
    p.add_argument("--num-workers", type=int, default=None, help="scoring processes (default: all cores)")
    p.add_argument("--benchmark", default=None, choices=REASONING_BENCHMARKS,
                   help="grade a reasoning benchmark by exact match instead of ROUGE (its targets from the registry; "
                        "--dataset-file: its data set with dataset / ground_truth / tests columns)")
    p.add_argument("--verbose", action="store_true", help="verbose messages")
    args = p.parse_args(argv)
    if args.benchmark and args.record_targets is not None:
        p.error("--record-targets is for ROUGE targets; a --benchmark is judged by the registry's")
    return args


def default_model_name(checkpoint_path: str | None, cnndm: bool = False) -> str:
    """llama2-70b for a Llama-2-70B checkpoint, llama3_1-8b for a Llama-3.1-8B one (its edge
    benchmark is chosen with --model-name llama3_1-8b-edge), the embedded model's name for None
    (with CNNDM_SUFFIX on the CNN-DailyMail demo: its own targets), else the file/folder name."""
    if checkpoint_path is None:
        return DEFAULT_MODEL_NAME + (CNNDM_SUFFIX if cnndm else "")
    name = Path(checkpoint_path.rstrip("/")).name
    if re.search(r"llama[-_]?2[-_].*70b", name, re.IGNORECASE):
        return LLAMA2_70B
    if re.search(r"llama[-_]?3\.?1[-_].*8b", name, re.IGNORECASE):
        return LLAMA31_8B
    return name.removesuffix(".gguf")


def is_cnndm(df) -> bool:
    """A CNN-DailyMail set as processcnndm.py (and the reference's download_cnndm.py) writes it."""
    return "instruction" in df.columns and "system_prompt" not in df.columns


def load_accuracy_log(path: str, dtype: str) -> list[Response]:
    """Responses from LoadGen's accuracy log, de-duplicated by qsl_idx (the first one wins)."""
    entries = read_entries(path)  # every entry has an integer qsl_idx and a string 'data'
    out, seen = [], set()
    for entry in entries:
        qsl_idx, data = entry["qsl_idx"], entry["data"]
        if qsl_idx in seen:
            continue
        seen.add(qsl_idx)
        try:
            out.append(Response(qsl_idx, decode_ids(data, dtype)))
        except HarnessError as e:
            raise HarnessError(f"accuracy log {path}: response for qsl_idx {qsl_idx}: {e}") from None
    if dtype == "int32" and _looks_like_int64(out):
        raise HarnessError(f"accuracy log {path} looks like int64 ids (every second int32 is 0); pass --dtype int64")
    if len(entries) > len(out):
        # LoadGen logs a sample once per query in accuracy mode: repeats mean a performance-mode log
        # or a merged one, and scoring them twice would weigh those samples double.
        log.warning("accuracy log %s: %d of %d responses repeat a qsl_idx already seen; the first of each is "
                    "scored", path, len(entries) - len(out), len(entries))
    return out


def _looks_like_int64(responses: list[Response]) -> bool:
    """Small int64 ids read as int32 come out as id, 0, id, 0, ...: every high half is zero."""
    ids = [r.token_ids for r in responses if r.token_ids.size]
    return bool(ids) and all(a.size % 2 == 0 and not a[1::2].any() for a in ids) and any(a[0::2].any() for a in ids)


def load_references(dataset_file: str, responses: list[Response], df=None) -> list[str]:
    """The reference output for each response, in response order (`df`: the dataset, read already)."""
    from dataset import read_processed_pickle
    df = read_processed_pickle(dataset_file) if df is None else df
    if "output" not in df.columns:
        raise HarnessError(f"dataset {dataset_file} lacks the column 'output' (the reference answers)")
    outputs = df["output"]
    bad = [r.qsl_idx for r in responses if not 0 <= r.qsl_idx < len(df)]
    if bad:
        raise HarnessError(f"accuracy log has qsl_idx {bad[0]} ({len(bad)} in all) outside the dataset "
                           f"{dataset_file} of {len(df)} samples: wrong --dataset-file?")
    refs = [outputs.iloc[r.qsl_idx] for r in responses]
    bad = [(r.qsl_idx, ref) for r, ref in zip(responses, refs) if not isinstance(ref, str)]
    if bad:   # str() would score a missing answer as the word "None" or "nan"
        raise HarnessError(f"dataset {dataset_file}: the 'output' of sample {bad[0][0]} is {bad[0][1]!r}, not text "
                           f"({len(bad)} such samples)")
    return refs


def decode(tokenizer, responses: list[Response], dtype: str, skip_special_tokens: bool = True) -> list[str]:
    vocab = len(tokenizer)
    for r in responses:
        if r.token_ids.size and (r.token_ids.min() < 0 or r.token_ids.max() >= vocab):
            bad = int(r.token_ids.max() if r.token_ids.max() >= vocab else r.token_ids.min())
            raise HarnessError(f"response for qsl_idx {r.qsl_idx} has token id {bad}, outside the tokenizer's "
                               f"vocabulary of {vocab}: wrong --dtype (now {dtype}) or --checkpoint-path?")
    return tokenizer.batch_decode([r.token_ids.tolist() for r in responses], skip_special_tokens=skip_special_tokens)


def grade_reasoning_log(benchmark: str, responses: list[Response], dataset_file: str, checkpoint_path: str | None,
                        dtype: str, num_workers: int | None = None):
    """Exact-match Score of a reasoning benchmark's responses (also compliance.py's TEST07)."""
    from accuracy import reasoning, sandbox
    from inputs import reasoning as data
    from inputs.tokenizer import load_decoder

    df = data.read(dataset_file)
    bad = [r.qsl_idx for r in responses if not 0 <= r.qsl_idx < len(df)]
    if bad:
        raise HarnessError(f"accuracy log has qsl_idx {bad[0]} outside the dataset {dataset_file} of {len(df)} rows")
    rows = df.iloc[[r.qsl_idx for r in responses]]
    tests = data.code_tests(df)

    def run_code(pairs):
        missing = sorted({q for _, q in pairs if q not in tests})
        if missing:
            raise HarnessError(f"no test cases for livecodebench question(s) {', '.join(missing[:3])} in "
                               f"{dataset_file} (a `tests` column)")
        if not sandbox.available():
            raise HarnessError("livecodebench code runs only in the sandbox, which needs root and Linux namespaces "
                               "(unshare); neither is available here")
        return [r.passed for r in sandbox.run_all([(code, tests[q]) for code, q in pairs], workers=num_workers)]

    # gpt-oss-120b's grader reads the Harmony channel markers, which are special tokens
    texts = decode(load_decoder(checkpoint_path), responses, dtype, skip_special_tokens=benchmark != "gpt-oss-120b")
    graded = reasoning.grade(benchmark, texts, rows["ground_truth"].tolist(), rows["dataset"].tolist(), run_code)
    return reasoning.score(benchmark, graded, [len(r.token_ids) for r in responses])


def evaluate_reasoning(args, responses: list[Response], log_dir: Path) -> int:
    """Exact match of a reasoning benchmark: the reference's printed dict, the table per
    sub-dataset, the verdict against the round's targets, accuracy.txt / .json."""
    score = grade_reasoning_log(args.benchmark, responses, args.dataset_file, args.checkpoint_path, args.dtype,
                                args.num_workers)
    bench = registry.benchmark(None, args.benchmark)
    values = {"exact_match": score.exact_match, "tokens_per_sample": score.tokens_per_sample}
    checks = [(m, values[m.name], m.passes(values[m.name])) for m in bench.metrics]
    printed = f"\nResults\n\n{score.checker_line()}\n"
    verdict = "\n".join([f"Accuracy targets: {bench.name} (MLPerf {bench.round} submission checker)"] + [
        f"{m.name} {value:.4f}: {'PASS' if ok else 'FAIL'} (bounds {m.bounds[0]:.4f}"
        f"{'' if m.bounds[1] is None else f' - {m.bounds[1]:.4f}'})" for m, value, ok in checks])
    print(printed + "\n" + score.table() + "\n" + verdict)
    sha = file_sha256(args.mlperf_accuracy_file)
    summary = {"benchmark": bench.name, "round": bench.round, "result": values, "num_samples": score.num_samples,
               "per_dataset": {k: {"right": r, "total": t} for k, (r, t) in score.per_dataset.items()},
               "passed": all(ok for _, _, ok in checks),
               "mlperf_accuracy_file": os.path.abspath(args.mlperf_accuracy_file),
               "mlperf_accuracy_file_sha256": sha, "dataset_file": os.path.abspath(args.dataset_file),
               "checkpoint_path": args.checkpoint_path, "dtype": args.dtype}
    text = f"{printed}\n{score.table()}\n{verdict}\nhash={sha}\n"
    written = write_new(log_dir, "accuracy", (".txt", ".json"),
                        {".txt": text, ".json": json.dumps(summary, indent=2) + "\n"})
    log.info("wrote %s and %s", written[".txt"], written[".json"])
    return 0 if summary["passed"] else 1


def summarize(scores: list[RougeScores], preds: list[str], gen_tok_len: int) -> dict:
    """The reference's result dict, with plain Python numbers so that it prints as the reference's did."""
    result = {k: float(round(np.mean([getattr(s, k) for s in scores]) * 100, 4)) for k in ROUGE_TYPES}
    gen_num = len(preds)
    result.update({
        "gen_len": int(sum(len(p) for p in preds)),
        "gen_num": gen_num,
        "gen_tok_len": int(gen_tok_len),
        "tokens_per_sample": round(gen_tok_len / gen_num, 1),
    })
    return result


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_new(folder: Path, stem: str, suffixes: tuple[str, ...], contents: dict[str, str]) -> dict[str, Path]:
    """Write stem.<suffix> files without overwriting: the first free stem, stem.1, stem.2 ... for all of them."""
    make_folder(folder, "--log-dir")
    for n in range(1000):
        name = stem if n == 0 else f"{stem}.{n}"
        paths = {s: folder / f"{name}{s}" for s in suffixes}
        if any(p.exists() for p in paths.values()):
            continue
        written = {}
        try:
            for s, path in paths.items():
                with temp_file_beside(path) as tmp:
                    with open(tmp, "w") as f:
                        f.write(contents[s])
                    os.link(tmp, path)  # fails if another run took the name meanwhile; never overwrites
                written[s] = path
            return written
        except BaseException as e:  # all of the files or none (also on Ctrl-C or a full disk)
            for p in written.values():
                p.unlink()
            if not isinstance(e, FileExistsError):
                raise
    raise HarnessError(f"no free name for {stem} in {folder}")


def write_per_sample_csv(path: str, responses, preds_raw, scores):
    """The whole file or none, and never over an existing one."""
    try:
        with temp_file_beside(path) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["qsl_idx", "gen_output_tok_len", *ROUGE_TYPES, "gen_output_text"])
                for r, text, s in zip(responses, preds_raw, scores):
                    w.writerow([r.qsl_idx, len(r.token_ids), *(getattr(s, k) for k in ROUGE_TYPES), text])
            os.link(tmp, path)
    except FileExistsError:
        raise HarnessError(f"{path} exists already; give a new --per-sample-csv path") from None


def main(argv=None) -> int:
    args = get_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    targets = None
    from dataset import read_processed_pickle
    dataset = None if args.benchmark else read_processed_pickle(args.dataset_file)  # reasoning sets: their own reader
    model_name = args.model_name or default_model_name(args.checkpoint_path, dataset is not None and is_cnndm(dataset))
    log_dir = Path(args.log_dir or os.path.dirname(os.path.abspath(args.mlperf_accuracy_file)))
    if args.record_targets is None:
        targets_file = Path(args.targets_file or TARGETS_FILE)
        known = load_targets(targets_file)
        if model_name in known:
            targets = known[model_name]
        elif model_name in registry.model_names():  # an MLPerf benchmark's model: the round's targets
            targets = registry.model_targets(model_name)
        elif args.model_name:  # asked for by name: a typo must not pass as "no verdict"
            targets = get_targets(model_name, targets_file)
        else:
            log.info("no accuracy targets for %r in %s: scores only, no verdict", model_name, targets_file)
    else:
        # Recorded targets go where the user says, by default beside this run's results: never
        # silently into the project's own accuracy_targets.yaml.
        targets_file = Path(args.targets_file) if args.targets_file else log_dir / "accuracy_targets.yaml"
        if targets_file.exists() and args.record_targets in load_targets(targets_file):
            raise HarnessError(f"{targets_file} already has targets for {args.record_targets!r}; "
                               "remove that entry first to re-record it")
    if args.per_sample_csv and os.path.lexists(args.per_sample_csv):
        raise HarnessError(f"{args.per_sample_csv} exists already; give a new --per-sample-csv path")
    # Every output folder before the scoring, which can take minutes: a bad one fails at once.
    make_folder(log_dir, "--log-dir")
    if args.per_sample_csv:
        make_folder(os.path.dirname(os.path.abspath(args.per_sample_csv)), "the folder of --per-sample-csv")
    if args.record_targets is not None:
        make_folder(targets_file.parent, "the folder of --targets-file")

    responses = load_accuracy_log(args.mlperf_accuracy_file, args.dtype)
    if args.benchmark:
        return evaluate_reasoning(args, responses, log_dir)
    refs_raw = load_references(args.dataset_file, responses, dataset)
    from inputs.tokenizer import load_decoder
    preds_raw = decode(load_decoder(args.checkpoint_path), responses, args.dtype)
    gen_tok_len = sum(len(r.token_ids) for r in responses)

    log.info("scoring %d samples (sentence splitter: %s)", len(responses), splitter_name())
    # sentence splitting costs about a third of scoring: spread it over the cores as well
    both = chunked_map(newline_sentences_chunk, preds_raw + refs_raw, args.num_workers)
    preds, refs = both[:len(preds_raw)], both[len(preds_raw):]
    scores = score_pairs(refs, preds, num_workers=args.num_workers, progress=len(preds) > 2000)
    result = summarize(scores, preds, gen_tok_len)

    printed = f"\nResults\n\n{result}\n"
    print(printed, end="")
    if args.per_sample_csv:
        write_per_sample_csv(args.per_sample_csv, responses, preds_raw, scores)

    if args.record_targets is not None:
        source = (f"evaluation of {os.path.abspath(args.mlperf_accuracy_file)} (sha256 "
                  f"{file_sha256(args.mlperf_accuracy_file)[:16]}) on {os.path.abspath(args.dataset_file)}, "
                  f"{len(responses)} samples, tokenizer {args.checkpoint_path or DEFAULT_MODEL_NAME}, dtype {args.dtype}")
        model_name = args.record_targets
        # a CNN-DailyMail run records what llama3.1-8b is judged on (ROUGE-Lsum and gen_len too)
        metrics = tuple(registry.model_targets(LLAMA31_8B).metrics) if is_cnndm(dataset) else RECORDED_METRICS
        targets = record_targets(model_name, result, source, targets_file, metrics)
        print(f"recorded these scores as the targets of {model_name} in {targets_file}")

    if targets is None:
        levels = {}
        verdict = (f"Accuracy targets: none recorded for {model_name} in {targets_file}: no verdict "
                   f"(record some with --record-targets {model_name}, or choose others with --model-name)")
    else:
        levels = {lvl: targets.check(result, lvl) for lvl in LEVELS}
        if targets.sample_count and targets.sample_count != len(responses):
            log.warning("targets of %s come from %d samples, this run has %d: scores are not strictly comparable",
                        model_name, targets.sample_count, len(responses))
        lines = [f"Accuracy targets: {model_name} ({targets.source})"]
        for lvl, res in levels.items():
            lines.append(f"{lvl}% level: {'PASS' if res.passed else 'FAIL'}: "
                         + "; ".join(c.describe() for c in res.checks))
        verdict = "\n".join(lines)
    print(verdict)

    summary = {
        "result": result,
        "model_name": model_name,
        "targets": targets.metrics if targets else None,
        "targets_source": targets.source if targets else None,
        "accuracy_level": args.accuracy_level,
        "passed": {lvl: res.passed for lvl, res in levels.items()} or None,
        "checks": {lvl: [c.__dict__ for c in res.checks] for lvl, res in levels.items()},
        "mlperf_accuracy_file": os.path.abspath(args.mlperf_accuracy_file),
        "mlperf_accuracy_file_sha256": file_sha256(args.mlperf_accuracy_file),
        "dataset_file": os.path.abspath(args.dataset_file),
        "checkpoint_path": args.checkpoint_path,
        "dtype": args.dtype,
        "sentence_splitter": splitter_name(),
    }
    text = f"{printed}\n{verdict}\nhash={summary['mlperf_accuracy_file_sha256']}\n"
    written = write_new(log_dir, "accuracy", (".txt", ".json"),
                        {".txt": text, ".json": json.dumps(summary, indent=2) + "\n"})
    log.info("wrote %s and %s", written[".txt"], written[".json"])
    return 0 if not levels or levels[args.accuracy_level].passed else 1


if __name__ == "__main__":
    raise SystemExit(exit_on_error(main))
