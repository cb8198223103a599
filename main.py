"""Run an MLPerf-style LoadGen benchmark of an LLM backend: Offline, Server, SingleStream,
MultiStream, or Interactive (a Server run under the LoadGen model's interactive latency limits).

Flags follow the MLPerf llama2-70b reference (main.py) so existing scripts keep working;
--backend picks the model backend (default: llama.cpp on the embedded Gemma 3 270M).

    python main.py --scenario Offline --accuracy --dataset-path data/....pkl
    python main.py --scenario Server                      # short demo run on the defaults
"""
from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import signal
import sys
import time

from common.errors import HarnessError, exit_on_error
from common.redact import RedactingArgumentParser, redact_argv
from common.times import iso_utc, stamp
from harness.loadgen_conf import UINT64_MAX
from mlsubmit import registry

log = logging.getLogger("main")

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = ("Offline", "Server", "SingleStream", "MultiStream", "Interactive")
# Interactive is no LoadGen scenario: it is a Server run of the "<model>-interactive" LoadGen model,
# whose mlperf.conf entries hold the tighter TTFT/TPOT limits (as the MLPerf reference runs it).
INTERACTIVE_SUFFIX = "-interactive"


def get_args(argv=None) -> argparse.Namespace:
    p = RedactingArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    # --- the reference's flags -------------------------------------------------------
    p.add_argument("--scenario", choices=SCENARIOS, default="Offline", help="LoadGen scenario")
    p.add_argument("--model-path", default=None,
                   help="checkpoint folder or GGUF file (default: the embedded Gemma 3 270M Q4_K_M GGUF)")
    p.add_argument("--dataset-path", default=None,
                   help="processed pickle from processorca.py, or cnn_eval.json from processcnndm.py "
                        "(default: the --lg-model-name benchmark's demo set, built on first use)")
    p.add_argument("--accuracy", action="store_true", help="run accuracy mode (every sample once, logged)")
    p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 (hf/fakequant backends)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--user-conf", default=os.path.join(HERE, "user.conf"), help="LoadGen user config")
    p.add_argument("--audit-conf", default="audit.conf",
                   help="LoadGen audit config for compliance runs (used only if the file exists)")
    p.add_argument("--total-sample-count", type=int, default=None,
                   help="samples to load from the dataset (default: all of them)")
    p.add_argument("--batch-size", type=int, default=None, help="Offline batch size (default: backend's)")
    p.add_argument("--output-log-dir", default=None,
                   help="where LoadGen logs go; must be new or empty "
                        "(default: output-logs/<scenario>-<mode>-<date>-<time>)")
    p.add_argument("--enable-log-trace", action="store_true", help="LoadGen trace log (large)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="worker threads (Server: concurrent streams; default: backend's)")
    p.add_argument("--lg-model-name", default="llama2-70b", choices=registry.loadgen_model_names(),
                   help="model name for LoadGen config lookup (latency limits, sample counts); --scenario "
                        "Interactive uses its '-interactive' entry")
    p.add_argument("--api-server", action="append", default=None,
                   help="OpenAI-compatible server URL (repeatable; --backend openai)")
    p.add_argument("--api-model-name", default=None, help="model name served by --api-server")
    p.add_argument("--api-endpoint", default=None, choices=["completions", "chat"],
                   help="--backend openai: /v1/completions (default) or /v1/chat/completions, the prompt as one "
                        "user message, for servers that serve only chat models")
    p.add_argument("--api-key", default=None,
                   help="API key for --api-server, sent as a bearer token and never recorded "
                        "(default: $OPENAI_API_KEY)")
    p.add_argument("--max-reply-bytes", type=int, default=None,
                   help="--backend openai: a reply larger than this once decompressed (a whole stream, so any "
                        "line of it too) fails its query (default 16 MiB)")
    # --- ours ----------------------------------------------------------------------------
    p.add_argument("--backend", default="llamacpp", help="null, llamacpp, hf, fakequant, openai")
    p.add_argument("--backend-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="backend option (repeatable), e.g. --backend-arg n_threads=2")
    p.add_argument("--quant-config", default=None,
                   help="quantization YAML (quant_configs/): --backend fakequant simulates any config; "
                        "--backend hf executes the FP8 subset on a GPU (docs/quantization.md)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="default 1024 as the reference; a benchmark's own for its --lg-model-name (llama3.1-8b 128, "
                        "deepseek-r1 20000, gpt-oss-120b 32768 in accuracy runs, 10240 in performance runs); 128 for "
                        "the demo")
    p.add_argument("--min-new-tokens", type=int, default=1)
    p.add_argument("--ignore-eos", action="store_true", help="force max-new-tokens outputs (synthetic perf runs)")
    p.add_argument("--query-timeout", type=float, default=0.0,
                   help="complete a query as failed after this many seconds (0: no limit)")
    p.add_argument("--pin-cpu", type=int, default=None, metavar="N",
                   help="run LoadGen's issuing thread and the SUT workers on CPU N (null and openai "
                        "backends; for tens of thousands of queries per second, see docs/performance.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-sysmetrics", action="store_true", help="do not sample CPU/RAM/GPU during the run")
    p.add_argument("--goodput", nargs="+", default=None, metavar="METRIC:MS",
                   help="report the share of requests meeting SLOs, e.g. --goodput ttft:2000 tpot:200")
    p.add_argument("--print-loadgen-summary", action="store_true",
                   help="also echo LoadGen's own summary (always in mlperf_log_summary.txt)")
    # LoadGen reads its settings from files only; these override user.conf for one run.
    p.add_argument("--target-qps", type=float, default=None,
                   help="LoadGen target QPS (Server: the arrival rate; Offline: expected QPS), overrides user.conf")
    p.add_argument("--min-duration", type=float, default=None, metavar="SECONDS",
                   help="LoadGen minimum test duration in seconds, overrides user.conf")
    p.add_argument("--min-query-count", type=int, default=None,
                   help="LoadGen minimum query count, overrides user.conf")
    return p.parse_args(argv)


def backend_options(args) -> dict:
    opts: dict = {}
    for kv in args.backend_arg:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise HarnessError(f"--backend-arg expects KEY=VALUE, got '{kv}'")
        opts[key.strip()] = value.strip()
    if args.quant_config is not None:
        opts["quant_config"] = args.quant_config
    if args.api_server:
        opts["api_server"] = list(args.api_server)
    if args.api_model_name is not None:
        opts["api_model_name"] = args.api_model_name
    if args.api_key is not None:
        opts["api_key"] = args.api_key
    if args.api_endpoint is not None:
        opts["api_endpoint"] = args.api_endpoint
    if args.max_reply_bytes is not None:
        opts["max_reply_bytes"] = args.max_reply_bytes
    return opts


def loadgen_scenario(scenario: str) -> str:
    """The LoadGen scenario that runs `scenario` (Interactive runs as Server)."""
    return registry.LOADGEN_SCENARIO.get(scenario, scenario)


def loadgen_model_name(scenario: str, lg_model_name: str) -> str:
    """The LoadGen model name whose settings apply: for Interactive, the '-interactive' entry."""
    if scenario != "Interactive" or lg_model_name.endswith(INTERACTIVE_SUFFIX):
        return lg_model_name
    name = lg_model_name + INTERACTIVE_SUFFIX
    known = registry.loadgen_model_names()
    if name not in known:
        with_interactive = [n for n in known if n.endswith(INTERACTIVE_SUFFIX)]
        raise HarnessError(f"--scenario Interactive: LoadGen has no interactive settings for {lg_model_name} "
                           f"(it has {', '.join(with_interactive)})")
    return name


def fit_unique_issue(args, settings, samples: int) -> None:
    """An audit config that issues each sample once (performance_issue_unique: TEST07, TEST09) over
    a data set smaller than LoadGen's performance_sample_count (mlperf.conf's 6,396 for
    gpt-oss-120b, whose TEST07 set has 990): LoadGen 6.0.17 crashes (SIGSEGV) on it, so the count
    is lowered to the data set's size. LoadGen then issues each of its samples once (also when
    min_query_count asks for more queries than there are samples)."""
    import mlperf_loadgen as lg

    if args.accuracy or not os.path.isfile(args.audit_conf):
        return
    audit = lg.TestSettings()
    audit.FromConfig(args.audit_conf, loadgen_model_name(args.scenario, args.lg_model_name),
                     loadgen_scenario(args.scenario), 2)
    if audit.performance_issue_unique and settings.performance_sample_count_override > samples:
        log.info("%s issues each sample once: performance_sample_count %d lowered to the data set's %d samples",
                 args.audit_conf, settings.performance_sample_count_override, samples)
        settings.performance_sample_count_override = samples


def build_settings(args):
    import mlperf_loadgen as lg

    from harness.loadgen_conf import check_loadgen_confs

    if not os.path.isfile(args.user_conf):
        raise HarnessError(f"user config not found: {args.user_conf}")
    audit_conf = args.audit_conf if os.path.isfile(args.audit_conf) else None
    model = loadgen_model_name(args.scenario, args.lg_model_name)
    scenario = loadgen_scenario(args.scenario)
    check_loadgen_confs(args.user_conf, audit_conf, model)
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    # LoadGen loads its embedded mlperf.conf first; user.conf overrides it.
    if settings.FromConfig(args.user_conf, model, scenario) != 0:
        raise HarnessError(f"LoadGen could not parse user config {args.user_conf} (see its log lines above)")
    settings.mode = lg.TestMode.AccuracyOnly if args.accuracy else lg.TestMode.PerformanceOnly
    for name, value in loadgen_overrides(args).items():
        setattr(settings, name, value)
    if scenario == "Server":
        check_server_schedule(settings, args.accuracy)
    return settings


# LoadGen schedules a Server run's queries before the first one is issued and keeps them all in
# memory: measured about 350 bytes each (3 million queries: 1 GiB); 100 is a safe lower bound.
SCHEDULED_QUERY_BYTES = 100


def check_server_schedule(settings, accuracy: bool) -> None:
    """Refuse a target QPS whose schedule LoadGen cannot build: so high that the queries of
    min_duration exceed the machine's memory (LoadGen fills it until the process is killed), or
    so low that the arrival times overflow LoadGen's 64-bit nanosecond clock (the same)."""
    import psutil

    qps = settings.server_target_qps
    if settings.min_query_count / qps * 1e9 >= 2**63:
        raise HarnessError(f"Server target QPS {qps:g} is too low: the {settings.min_query_count} queries of "
                           f"min_query_count would arrive after LoadGen's 64-bit nanosecond clock overflows")
    if accuracy:  # every sample once, whatever the QPS
        return
    n = expected_queries(settings, 0)
    need, total = n * SCHEDULED_QUERY_BYTES, psutil.virtual_memory().total
    if need > total:
        raise HarnessError(f"Server target QPS {qps:g} over min_duration {settings.min_duration_ms / 1000:g} s makes "
                           f"LoadGen schedule {n:.3g} queries up front, more than {need / 2**30:.3g} GiB, above this "
                           f"machine's {total / 2**30:.3g} GiB; lower the target QPS or min_duration")


def expected_queries(settings, n_samples: int) -> int:
    """About how many queries a performance run issues (for the progress bar's total and ETA):
    enough for both minimums, rounded up to whole passes over the samples when LoadGen
    concatenates sample permutations."""
    scenario = settings.scenario.name
    if scenario == "Server":
        qps = settings.server_target_qps
    elif scenario == "Offline":
        qps = settings.offline_expected_qps
    else:  # one query at a time, each expected to take the expected latency
        latency_ns = (settings.single_stream_expected_latency_ns if scenario == "SingleStream"
                      else settings.multi_stream_expected_latency_ns)
        qps = 1e9 / max(1, latency_ns)
    n = max(settings.min_query_count, int(qps * settings.min_duration_ms / 1000) + 1)
    if settings.sample_concatenate_permutation and n_samples:
        n = -(-n // n_samples) * n_samples
    if scenario == "MultiStream":  # the progress bar counts samples; a query holds samples_per_query
        n *= settings.multi_stream_samples_per_query
    return n


def check_run_flags(args) -> None:
    """The SUT's own numbers (LoadGen's are checked by loadgen_overrides)."""
    for flag, value in (("--batch-size", args.batch_size), ("--num-workers", args.num_workers)):
        if value is not None and value < 1:
            raise HarnessError(f"{flag} must be >= 1, got {value}")
    if not 0 <= args.query_timeout < math.inf:
        raise HarnessError(f"--query-timeout must be a finite number of seconds >= 0 (0: no limit), "
                           f"got {args.query_timeout:g}")


def loadgen_overrides(args) -> dict:
    """LoadGen settings given by flags (they win over user.conf), by TestSettings attribute name.
    LoadGen keeps counts and milliseconds in 64-bit unsigned integers."""
    out: dict = {}
    if args.target_qps is not None:
        if not args.target_qps > 0:
            raise HarnessError(f"--target-qps must be > 0, got {args.target_qps:g}")
        if args.target_qps == math.inf:  # LoadGen would log it as a bare inf, which no JSON reader takes
            raise HarnessError(f"--target-qps must be finite, got {args.target_qps:g}")
        scenario = loadgen_scenario(args.scenario)
        if scenario not in ("Server", "Offline"):  # LoadGen issues one query at a time: no rate to set
            raise HarnessError(f"--target-qps applies to Offline, Server and Interactive, not {args.scenario}")
        out["server_target_qps" if scenario == "Server" else "offline_expected_qps"] = args.target_qps
    if args.min_duration is not None:
        if not args.min_duration >= 0:
            raise HarnessError(f"--min-duration must be >= 0 seconds, got {args.min_duration:g}")
        if not args.min_duration * 1000 < UINT64_MAX:
            raise HarnessError(f"--min-duration must be below 2^64 ms, got {args.min_duration:g}")
        out["min_duration_ms"] = round(args.min_duration * 1000)
    if args.min_query_count is not None:
        if args.min_query_count < 1:
            raise HarnessError(f"--min-query-count must be >= 1, got {args.min_query_count}")
        if args.min_query_count > UINT64_MAX:
            raise HarnessError(f"--min-query-count must be below 2^64, got {args.min_query_count}")
        out["min_query_count"] = args.min_query_count
    return out


def settings_dict(settings) -> dict:
    out = {}
    for name in dir(settings):
        if name.startswith("_") or name == "FromConfig":
            continue
        value = getattr(settings, name)
        # enums by name ("PerformanceOnly", not "TestMode.PerformanceOnly")
        out[name] = value if isinstance(value, (int, float, bool, str)) else getattr(value, "name", str(value))
    return out


def run(args) -> int:
    import mlperf_loadgen as lg

    from backends import get_backend_class
    from backends.base import GenerationParams
    from dataset import Dataset
    from harness.core import check_pin_cpu
    from harness.results import load_results, parse_goodput, write_run_results
    from harness.runner import EXIT_INTERRUPTED, claim_output_dir, publish_output_dir, run_loadgen
    from harness.summary import run_summary
    from harness.supervisor import note
    from harness.sysmetrics import SystemMonitor
    from inputs.demo import DEMO_MAX_NEW_TOKENS, OPENORCA_DEMO, default_dataset_path
    from SUT_offline import SUT
    from SUT_server import SUTServer

    # Validate everything cheap before loading a model.
    check_run_flags(args)
    backend_cls = get_backend_class(args.backend)
    if args.pin_cpu is not None:
        check_pin_cpu(backend_cls, args.pin_cpu)
    demo = args.model_path is None and args.dataset_path is None
    found = registry.by_model(args.lg_model_name)
    if args.max_new_tokens is None:
        limits = found[0].max_new_tokens if found else None  # a benchmark's own: 20,000 for deepseek-r1
        args.max_new_tokens = DEMO_MAX_NEW_TOKENS if demo else limits[0 if args.accuracy else 1] if limits else 1024
    params = GenerationParams(args.max_new_tokens, args.min_new_tokens, args.ignore_eos)
    if params.max_new_tokens < 2:   # LoadGen's token latencies (use_token_latencies) reject 1-token replies
        raise HarnessError(f"--max-new-tokens {params.max_new_tokens}: LoadGen's LLM mode needs at least 2 output "
                           "tokens per query (it logs 'Number of tokens need to be greater than 1' for each)")
    backend = backend_cls(model_path=args.model_path, dtype=args.dtype, device=args.device, params=params,
                          options=backend_options(args))
    settings = build_settings(args)
    goodput = parse_goodput(args.goodput)
    if not os.path.isfile(args.audit_conf) and args.audit_conf != "audit.conf":
        raise HarnessError(f"audit config not found: {args.audit_conf}")
    demo_set = found[0].dataset.demo if found else OPENORCA_DEMO   # the benchmark's shipped demo set
    if args.dataset_path is None and demo_set is None:
        raise HarnessError(f"--lg-model-name {args.lg_model_name}: no demo data set is shipped; give --dataset-path")
    dataset_path = args.dataset_path or default_dataset_path(args.model_path, demo=demo_set)
    dataset = Dataset(dataset_path, args.total_sample_count, model_path=args.model_path)
    fit_unique_issue(args, settings, dataset.total_sample_count)
    if args.output_log_dir is None:
        mode = "accuracy" if args.accuracy else "performance"
        args.output_log_dir = os.path.join("output-logs", f"{args.scenario.lower()}-{mode}-{stamp()}")
        print(f"no --output-log-dir given: this run writes {os.path.abspath(args.output_log_dir)}", flush=True)
    out_tmp = claim_output_dir(args.output_log_dir)
    engine, advice = backend.native_engine()
    note(engine=engine, advice=advice, partial=out_tmp)

    started = time.time()
    backend.load()
    log.info("backend %s loaded in %.1f s", args.backend, time.time() - started)
    batch_size = args.batch_size or backend_cls.default_batch_size
    workers = args.num_workers or backend_cls.default_num_workers

    progress = None
    if not args.no_progress:
        from tqdm import tqdm
        total = dataset.total_sample_count if args.accuracy else expected_queries(settings, dataset.total_sample_count)
        progress = tqdm(total=total, desc=f"{args.scenario} queries", unit="q", mininterval=1.0, file=sys.stderr)

    # Every scenario but Offline streams: LoadGen times the first token (use_token_latencies).
    sut_cls = SUT if args.scenario == "Offline" else SUTServer
    sut = sut_cls(backend, dataset, batch_size=batch_size, workers=workers,
                  query_timeout_s=args.query_timeout, progress=progress, pin_cpu=args.pin_cpu)

    log_output = lg.LogOutputSettings()
    log_output.outdir = out_tmp
    log_output.copy_summary_to_stdout = args.print_loadgen_summary
    log_settings = lg.LogSettings()
    log_settings.log_output = log_output
    log_settings.enable_trace = args.enable_log_trace

    lg_sut = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
    monitor = None if args.no_sysmetrics else SystemMonitor().start()
    sut.start()
    log.info("starting LoadGen: %s %s, %d samples", args.scenario,
             "accuracy" if args.accuracy else "performance", dataset.total_sample_count)
    outcome = None
    try:
        outcome = run_loadgen(lambda: lg.StartTestWithLogSettings(lg_sut, sut.qsl, settings, log_settings,
                                                                  args.audit_conf), sut.core.interrupt)
    finally:
        stopped = sut.stop(2.0 if sut.core.interrupted else 30.0)  # interrupted: not waiting for the backend
        records = sut.core.records.snapshot()  # a LoadGen still running adds (interrupted) queries
        sysmetrics = monitor.stop(records.output_tokens()) if monitor else None
        if progress is not None:
            progress.close()
        # What LoadGen or a stuck worker still uses is left to the process exit.
        clean = stopped and (outcome is None or outcome.finished)
        if clean:
            lg.DestroySUT(lg_sut)
            lg.DestroyQSL(sut.qsl)
            backend.close()
    finished = time.time()

    info = backend.info()
    run_info = {
        "scenario": args.scenario,
        "mode": "accuracy" if args.accuracy else "performance",
        "backend": info,
        "eos_token_ids": sorted(backend.eos_token_ids),
        "model_path": info.get("model_path"),  # as the backend resolved it (the embedded GGUF for None)
        "dtype": info.get("dtype"),            # what runs: a GGUF's quantization, "server" for an API
        "max_new_tokens": args.max_new_tokens,
        "quant_config": args.quant_config,
        "dataset_path": dataset_path,
        "total_sample_count": dataset.total_sample_count,
        "batch_size": batch_size,
        "num_workers": workers,
        "loadgen_scenario": loadgen_scenario(args.scenario),
        "lg_model_name": loadgen_model_name(args.scenario, args.lg_model_name),
        "user_conf": args.user_conf,
        "loadgen_settings": settings_dict(settings),
        "loadgen_overrides": loadgen_overrides(args),  # flags that replaced user.conf values
        "command": redact_argv(sys.argv),
        "started": iso_utc(started),
        "finished": iso_utc(finished),
        "duration_s": round(finished - started, 3),
        "status": "interrupted" if outcome.signal else "ok",  # write_run_results settles "failed"
        "signal": outcome.signal,
        "errors": sut.core.errors[:100],
        "n_errors": len(sut.core.errors),
    }
    results_path = write_run_results(out_tmp, run_info, records, sysmetrics, goodput)
    if run_info["status"] == "interrupted":  # never published: it is not a finished run
        print("\n" + run_summary(load_results(results_path)))
        print(f"RUN INTERRUPTED ({outcome.signal}): partial results in {out_tmp}", file=sys.stderr, flush=True)
        if not clean:
            sys.stdout.flush()
            os._exit(EXIT_INTERRUPTED)  # LoadGen or a backend call still runs: no interpreter shutdown
        return EXIT_INTERRUPTED
    publish_output_dir(out_tmp, args.output_log_dir)
    print("\n" + run_summary(load_results(os.path.join(args.output_log_dir, results_path.name))))
    print(f"LoadGen logs and results.json: {os.path.abspath(args.output_log_dir)}")
    if run_info["status"] != "ok":
        first = f"; first: {sut.core.errors[0]}" if sut.core.errors else ""
        print(f"RUN FAILED: {'; '.join(run_info['status_reasons'])}{first}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = get_args(argv)
    # SIGTERM acts as Ctrl-C; during the LoadGen test harness/runner.py handles both.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return exit_on_error(lambda: run_naming_a_full_disk(args), interrupted="interrupted; nothing was published")


def run_naming_a_full_disk(args) -> int:
    """run(args); a full disk (or quota) becomes one line naming the partial run folder."""
    try:
        return run(args)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        from harness.runner import claimed
        where = f"; the partial run is in {claimed[-1]}" if claimed else ""
        raise HarnessError(f"no space left on the disk ({e.strerror}{': ' + str(e.filename) if e.filename else ''})"
                           f"{where}; nothing was published") from None


if __name__ == "__main__":
    from harness.supervisor import supervised   # a native crash ends in one line, not a bare segfault
    sys.exit(supervised(main))
