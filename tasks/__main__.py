"""python -m tasks {perplexity,multiple-choice,summarization} [options]

Each command loads one backend (the flags of main.py: --backend, --model-path, --dtype, --device,
--backend-arg, --quant-config), runs the task on a file (a demo file from assets/tasks/ when
--dataset-path is not given) and writes results.json into a new --output-dir.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from backends import GenerationParams
from common.errors import HarnessError, exit_on_error
from common.files import read_text
from common.times import iso_utc, stamp
from tasks import common

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "tasks"
DEMO = {
    "perplexity": ASSETS / "prose.txt",
    "multiple-choice": ASSETS / "mmlu" / "test",
    "summarization": ASSETS / "wikilingua_demo.json",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tasks", description=__doc__.splitlines()[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="task", required=True)

    def common_flags(sp: argparse.ArgumentParser, task: str) -> None:
        sp.add_argument("--backend", default="llamacpp", help="llamacpp, hf, fakequant (anything with score())")
        sp.add_argument("--model-path", default=None, help="GGUF file or checkpoint folder (default: embedded "
                                                            "Gemma 3 270M GGUF)")
        sp.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 (hf/fakequant)")
        sp.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
        sp.add_argument("--backend-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="backend option (repeatable), e.g. n_ctx=4096")
        sp.add_argument("--quant-config", default=None, help="fake-quant YAML (--backend fakequant)")
        sp.add_argument("--dataset-path", default=str(DEMO[task]), help=f"input file (default: {DEMO[task]})")
        sp.add_argument("--output-dir", default=None,
                        help="new folder for results.json (default: results/tasks/TASK-TIMESTAMP)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bar")

    pp = sub.add_parser("perplexity", help="perplexity of a text file (llama.cpp's method by default)",
                        allow_abbrev=False)
    common_flags(pp, "perplexity")
    pp.add_argument("--ctx-size", type=int, default=512, help="tokens per window (llama.cpp -c)")
    pp.add_argument("--method", choices=("chunks", "sliding"), default="chunks",
                    help="chunks: llama.cpp's llama-perplexity; sliding: Hugging Face's strided window")
    pp.add_argument("--stride", type=int, default=None, help="sliding: tokens between windows (default ctx/2)")

    mp = sub.add_parser("multiple-choice", help="MMLU-style accuracy by answer log-likelihood", allow_abbrev=False)
    common_flags(mp, "multiple-choice")
    mp.add_argument("--style", choices=("letters", "text"), default=None,
                    help="letters: MMLU prompt scoring A/B/C/D; text: score the answer texts (llama.cpp). "
                         "Default: letters for MMLU files, text for llama.cpp files")
    mp.add_argument("--num-fewshot", type=int, default=0, help="solved examples before each question")
    mp.add_argument("--fewshot-path", default=None, help="dev file/folder the examples come from")
    mp.add_argument("--limit", type=int, default=None, help="first N questions only")

    sp = sub.add_parser("summarization", help="greedy summaries: documents/s and ROUGE", allow_abbrev=False)
    common_flags(sp, "summarization")
    sp.add_argument("--max-new-tokens", type=int, default=300, help="summary length cap (tokens)")
    sp.add_argument("--batch-size", type=int, default=1, help="documents per generate() call")
    sp.add_argument("--prompt-template", default=None, help="prompt with a {document} placeholder")
    sp.add_argument("--limit", type=int, default=None, help="first N documents only")
    return p


def run(argv: list[str] | None = None) -> Path:
    """Parse argv, run the task, write results.json; return its path."""
    from tasks import multiple_choice, perplexity, summarization

    args = build_parser().parse_args(argv)
    started = iso_utc()
    if args.output_dir is None:
        args.output_dir = os.path.join("results", "tasks", f"{args.task}-{stamp()}")
        print(f"no --output-dir given: results go to {os.path.abspath(args.output_dir)}", flush=True)
    out_dir = common.check_output_dir(args.output_dir)
    options = common.parse_backend_args(args.backend_arg)
    if args.quant_config is not None:
        options["quant_config"] = args.quant_config
    spec = common.BackendSpec(args.backend, args.model_path, args.dtype, args.device, options)
    progress = not args.no_progress
    dataset = {"path": os.path.abspath(args.dataset_path)}

    # Read the input before loading a model: a bad file fails in a second, not after a load.
    if args.task == "perplexity":
        text = read_text(args.dataset_path, "text file")
    elif args.task == "multiple-choice":
        loaded = multiple_choice.load_questions(args.dataset_path)
        questions = loaded.questions[: args.limit] if args.limit else loaded.questions
        if args.num_fewshot > 0 and not args.fewshot_path:
            raise HarnessError("--num-fewshot needs --fewshot-path (a dev file or folder to take examples from)")
        dev = multiple_choice.load_questions(args.fewshot_path).questions if args.fewshot_path else []
        style = args.style or ("letters" if loaded.format.startswith("mmlu") else "text")
        dataset.update({"format": loaded.format, "n_questions": len(questions),
                        "fewshot_path": os.path.abspath(args.fewshot_path) if args.fewshot_path else None})
    else:
        docs = summarization.load_documents(args.dataset_path)
        docs = docs[: args.limit] if args.limit else docs
        template = args.prompt_template or summarization.DEFAULT_TEMPLATE
        dataset["n_documents"] = len(docs)

    tokenizer = common.TaskTokenizer(args.model_path)
    # Scoring tasks generate nothing; one new token keeps a backend's context checks from
    # reserving room for a long generation.
    params = GenerationParams(max_new_tokens=args.max_new_tokens if args.task == "summarization" else 1)
    backend = spec.open(params)
    try:
        if args.task == "perplexity":
            ids = tokenizer.encode(text)
            result = perplexity.perplexity(backend, ids, args.ctx_size, args.method, args.stride,
                                           bos_id=tokenizer.bos_id, progress=progress)
            settings = {"ctx_size": args.ctx_size, "method": args.method,
                        "stride": args.stride if args.method == "sliding" else None}
            metrics, samples = result.as_dict(), None
            line = (f"perplexity {result.perplexity:.4f} +/- {result.perplexity_stderr:.4f} "
                    f"({result.n_scored_tokens} tokens, {result.n_windows} windows)")
        elif args.task == "multiple-choice":
            result, samples = multiple_choice.evaluate(backend, tokenizer, questions, style, dev,
                                                       args.num_fewshot, progress=progress)
            settings = {"style": style, "num_fewshot": args.num_fewshot}
            metrics = result.as_dict()
            line = (f"accuracy {result.accuracy:.4f} +/- {result.accuracy_stderr:.4f} over "
                    f"{result.n_questions} questions (chance {result.chance_accuracy:.4f})")
        else:
            result, samples = summarization.summarize(backend, tokenizer, docs, template, args.batch_size,
                                                      progress=progress)
            settings = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                        "prompt_template": template}
            metrics = result.as_dict()
            line = (f"{result.documents_per_second:.3f} documents/s, ROUGE-1 {result.rouge1:.2f} "
                    f"ROUGE-2 {result.rouge2:.2f} ROUGE-L {result.rougeL:.2f} over {result.n_documents} documents")
        metrics["load_average"] = list(os.getloadavg())
        path = common.write_task_results(out_dir, task=args.task, backend=backend, dataset=dataset,
                                         metrics=metrics, settings=settings, started=started, samples=samples)
    finally:
        backend.close()
    print(f"{args.task}: {line}; load average {os.getloadavg()[0]:.2f}")
    print(f"results: {path}")
    return path


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    exit_on_error(run)


if __name__ == "__main__":
    main()
