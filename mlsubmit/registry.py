"""The LLM benchmarks this harness runs, per MLPerf Inference round, as data.

Every number is a fact of the round, taken from mlcommons/inference: the submission checker's
constants (tools/submission/submission_checker/constants.py: MODEL_CONFIG[round] "models",
"required-scenarios-*", "optional-scenarios-*", "accuracy-target", "accuracy-upper-limit",
"performance-sample-count", "dataset-size", "seeds", "latency-constraint", "min-queries",
"models_TEST06"; OFFLINE_MIN_SPQ_SINCE_V4, LLM_LATENCY_LIMITS, TEST_DURATION_MS) and LoadGen's
loadgen/mlperf.conf (model names, the Interactive model names). Nothing else in the project
repeats them: main.py, evaluation.py, compliance.py, submission.py and its --check read them here.

    benchmark("v6.1", "llama2-70b-99.9").metrics      # what the accuracy run is judged on
    rounds()                                           # ("v6.0", "v6.1"), newest last
"""
from __future__ import annotations

from dataclasses import dataclass, field

from accuracy.targets import ModelTargets
from common.errors import HarnessError

SYSTEM_TYPES = ("datacenter", "edge", "datacenter,edge")
TEST_DURATION_MS = 600000      # TEST_DURATION_MS: every performance run's minimum duration
# LoadGen has no Interactive scenario: it is a Server run under the "-interactive" model's limits.
LOADGEN_SCENARIO = {"Interactive": "Server"}


@dataclass(frozen=True)
class Metric:
    """One accuracy metric: `name` as evaluation.py prints it (the checker's ACC_PATTERN reads
    it back from accuracy.txt), `checker` its name in the checker, `reference` the reference
    score, passing when reference * low <= value (<= reference * high, where high is set)."""
    name: str
    checker: str
    reference: float
    low: float
    high: float | None = None

    @property
    def bounds(self) -> tuple[float, float | None]:
        return self.reference * self.low, None if self.high is None else self.reference * self.high

    def passes(self, value: float) -> bool:
        lo, hi = self.bounds
        return value >= lo and (hi is None or value <= hi)


@dataclass(frozen=True)
class Latency:
    """LLM_LATENCY_LIMITS: p99 time to first token and time per output token, in ms."""
    ttft_ms: int
    tpot_ms: int


@dataclass(frozen=True)
class Seeds:
    qsl_rng_seed: int
    sample_index_rng_seed: int
    schedule_rng_seed: int

    def items(self) -> list[tuple[str, int]]:
        return [(k, getattr(self, k)) for k in ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed")]


@dataclass(frozen=True)
class Dataset:
    name: str
    size: int                  # dataset-size
    demo: str | None = None    # the small set shipped under assets/ (None: not shipped yet)
    accuracy_samples: int | None = None  # accuracy-sample-count, where an accuracy run covers fewer than size

    @property
    def accuracy_count(self) -> int:
        """What an accuracy run must cover (dataset_check): accuracy-sample-count, else dataset-size."""
        return self.accuracy_samples or self.size


@dataclass(frozen=True)
class Benchmark:
    name: str                          # the checker's benchmark folder name
    round: str
    lg_model_name: str                 # model name of LoadGen's mlperf.conf
    dataset: Dataset
    performance_sample_count: int
    offline_min_samples_per_query: int  # OFFLINE_MIN_SPQ_SINCE_V4
    metrics: tuple[Metric, ...]
    required: dict[str, tuple[str, ...]]   # system type -> required scenarios
    optional: dict[str, tuple[str, ...]]   # system type -> optional scenarios
    latency: dict[str, Latency]            # scenario -> LLM latency limits
    target_latency_ns: dict[str, int]      # latency-constraint (early stopping's target)
    min_queries: dict[str, int]            # min-queries per scenario
    test06: bool                           # models_TEST06
    test07: bool = False                   # models_TEST07: accuracy in performance mode
    test09: bool = False                   # models_TEST09: mean output length in performance mode
    min_duration_ms: int = TEST_DURATION_MS
    # the reference's output limit (accuracy runs, performance runs); None: main.py's own default
    max_new_tokens: tuple[int, int] | None = None

    @property
    def level(self) -> str:
        """"99" or "99.9": the share of the reference the ROUGE scores must reach."""
        return "99.9" if any(m.low == 0.999 for m in self.metrics) else "99"

    def scenarios(self, system_type: str, optional: bool = True) -> tuple[str, ...]:
        """The scenarios to run for a system type: the required ones, then the optional ones."""
        key = system_type.replace(" ", "")
        if key not in SYSTEM_TYPES:
            raise HarnessError(f"system type must be one of {', '.join(SYSTEM_TYPES)}, got {system_type!r}")
        if key not in self.required:
            raise HarnessError(f"{self.name} is not a {key} benchmark in {self.round} (it is one of: "
                               f"{', '.join(self.required)})")
        return self.required[key] + (self.optional.get(key, ()) if optional else ())

    def one_of(self, system_type: str) -> tuple[str, ...]:
        """Scenarios of which a closed submission needs at least one: Server and Interactive where
        both are optional (the checker's check_scenarios: "(one of) Interactive or Server")."""
        optional = self.optional.get(system_type.replace(" ", ""), ())
        return ("Server", "Interactive") if {"Server", "Interactive"} <= set(optional) else ()

    def loadgen_model(self, scenario: str) -> str:
        """The model name LoadGen reads mlperf.conf / user.conf under for this scenario."""
        return self.lg_model_name + ("-interactive" if scenario == "Interactive" else "")


@dataclass(frozen=True)
class Round:
    name: str
    seeds: Seeds
    benchmarks: dict[str, Benchmark] = field(default_factory=dict)


# -- the facts ----------------------------------------------------------------------------------------
def _rouge(r1: float, r2: float, rl: float, rlsum: float | None, level: float) -> tuple[Metric, ...]:
    out = [Metric("rouge1", "ROUGE1", r1, level), Metric("rouge2", "ROUGE2", r2, level),
           Metric("rougeL", "ROUGEL", rl, level)]
    if rlsum is not None:
        out.append(Metric("rougeLsum", "ROUGELSUM", rlsum, level))
    return tuple(out)


def _length(name: str, reference: float) -> Metric:
    # accuracy-target (x 0.9) and accuracy-upper-limit (x 1.1)
    return Metric(name, name.upper(), reference, 0.9, 1.1)


OPENORCA = Dataset("OpenOrca (GPT-4 answers, llama2-70b reference sampling)", 24576, "assets/openorca_demo")
CNN_DM = Dataset("CNN-DailyMail 3.0.0 validation", 13368, "assets/cnndm_demo")
CNN_DM_EDGE = Dataset("CNN-DailyMail 3.0.0 validation, edge subset", 5000, "assets/cnndm_demo")
LLAMA31_8B_MAX_NEW_TOKENS = (128, 128)  # language/llama3.1-8b/SUT_VLLM.py: max_tokens
# AIME, MATH500, GPQA, MMLU-Pro, LiveCodeBench; gpt-oss-120b's accuracy runs cover 4,395 of its 6,396
# (accuracy-sample-count, LoadGen's accuracy_sample_count_override)
DEEPSEEK_R1 = Dataset("deepseek-r1 reasoning set (AIME, MATH500, GPQA, MMLU-Pro, LiveCodeBench)", 4388,
                      "assets/reasoning_demo/deepseek-r1.jsonl")
GPT_OSS = Dataset("gpt-oss-120b reasoning set (AIME25, GPQA-Diamond, LiveCodeBench v6, ...)", 6396,
                  "assets/reasoning_demo/gpt-oss-120b.jsonl", accuracy_samples=4395)

DC = "datacenter"
DC_EDGE = "datacenter,edge"
SERVER_20S = {"Server": 20_000_000_000}
LLM_MIN_QUERIES = {"SingleStream": 1024, "Server": 270336, "Offline": 1}
EDGE_MIN_QUERIES = {"SingleStream": 1024, "Offline": 1}
SERVER_60S = {"Server": 60_000_000_000}
DEEPSEEK_R1_LATENCY = {"Server": Latency(2000, 80), "Interactive": Latency(1500, 15)}
GPT_OSS_LATENCY = {"Server": Latency(3000, 80), "Interactive": Latency(2000, 15)}
LLAMA2_LATENCY = {"Server": Latency(2000, 200), "Interactive": Latency(450, 40)}
LLAMA31_8B_LATENCY = {"Server": Latency(2000, 100), "Interactive": Latency(500, 30)}


def _llama2_70b(round_name: str, level: str) -> Benchmark:
    ratio = 0.999 if level == "99.9" else 0.99
    return Benchmark(
        name=f"llama2-70b-{level}", round=round_name, lg_model_name="llama2-70b", dataset=OPENORCA,
        performance_sample_count=24576, offline_min_samples_per_query=24576,
        metrics=_rouge(44.4312, 22.0352, 28.6162, None, ratio) + (_length("tokens_per_sample", 294.45),),
        required={DC: ("Offline",), DC_EDGE: ("Offline",)},
        optional={DC: ("Server", "Interactive"), DC_EDGE: ("Server", "Interactive")},
        latency=LLAMA2_LATENCY, target_latency_ns=SERVER_20S, min_queries=LLM_MIN_QUERIES, test06=True)


def _llama31_8b(round_name: str) -> Benchmark:
    return Benchmark(
        name="llama3.1-8b", round=round_name, lg_model_name="llama3_1-8b", dataset=CNN_DM,
        performance_sample_count=13368, offline_min_samples_per_query=13368,
        metrics=_rouge(38.7792, 15.9075, 24.4957, 35.793, 0.99) + (_length("gen_len", 8167644),),
        required={DC: ("Offline",), DC_EDGE: ("Offline",)},
        optional={DC: ("Server", "Interactive"), DC_EDGE: ("Server", "Interactive")},
        latency=LLAMA31_8B_LATENCY, target_latency_ns=SERVER_20S, min_queries=LLM_MIN_QUERIES, test06=True,
        max_new_tokens=LLAMA31_8B_MAX_NEW_TOKENS)


def _llama31_8b_edge(round_name: str) -> Benchmark:
    return Benchmark(
        name="llama3.1-8b-edge", round=round_name, lg_model_name="llama3_1-8b-edge", dataset=CNN_DM_EDGE,
        performance_sample_count=5000, offline_min_samples_per_query=5000,
        metrics=_rouge(39.06, 16.1147, 24.6375, 36.124, 0.99) + (_length("gen_len", 3051113),),
        required={"edge": ("Offline", "SingleStream"), DC_EDGE: ("Offline", "SingleStream")},
        optional={}, latency={}, target_latency_ns={}, min_queries=EDGE_MIN_QUERIES, test06=False,
        max_new_tokens=LLAMA31_8B_MAX_NEW_TOKENS)


def _deepseek_r1(round_name: str) -> Benchmark:
    return Benchmark(
        name="deepseek-r1", round=round_name, lg_model_name="deepseek-r1", dataset=DEEPSEEK_R1,
        performance_sample_count=4388, offline_min_samples_per_query=4388,
        metrics=(Metric("exact_match", "exact_match", 81.3582, 0.99), _length("tokens_per_sample", 3886.2274)),
        required={DC: ("Offline",), DC_EDGE: ("Offline",)},
        optional={DC: ("Server", "Interactive"), DC_EDGE: ("Server", "Interactive")},
        latency=DEEPSEEK_R1_LATENCY, target_latency_ns=SERVER_60S, min_queries=LLM_MIN_QUERIES, test06=True,
        max_new_tokens=(20000, 20000))  # MAX_OSL of the reference's backends


def _gpt_oss_120b(round_name: str) -> Benchmark:
    return Benchmark(
        name="gpt-oss-120b", round=round_name, lg_model_name="gpt-oss-120b", dataset=GPT_OSS,
        performance_sample_count=6396, offline_min_samples_per_query=6396,
        # only an upper limit on the length: accuracy-upper-limit 1.1 x 9999, no lower bound
        metrics=(Metric("exact_match", "exact_match", 83.13, 0.99),
                 Metric("tokens_per_sample", "TOKENS_PER_SAMPLE", 9999, 0.0, 1.1)),
        required={DC: ("Offline",), DC_EDGE: ("Offline",)},
        optional={DC: ("Server", "Interactive"), DC_EDGE: ("Server", "Interactive")},
        latency=GPT_OSS_LATENCY, target_latency_ns=SERVER_60S, min_queries=LLM_MIN_QUERIES, test06=False,
        test07=True, test09=True,
        max_new_tokens=(32768, 10240))  # generation_config.json; its README's performance config


def _round(name: str, seeds: Seeds, benchmarks: list[Benchmark]) -> Round:
    return Round(name, seeds, {b.name: b for b in benchmarks})


ROUNDS: dict[str, Round] = {
    "v6.0": _round("v6.0", Seeds(2465351861681999779, 14276810075590677512, 3936089224930324775),
                   [_llama2_70b("v6.0", "99"), _llama2_70b("v6.0", "99.9"), _llama31_8b("v6.0"),
                    _llama31_8b_edge("v6.0"), _deepseek_r1("v6.0"), _gpt_oss_120b("v6.0")]),
    "v6.1": _round("v6.1", Seeds(2085463073848966840, 2747215439041700203, 16159082839903944936),
                   [_llama2_70b("v6.1", "99.9"), _llama31_8b("v6.1"), _llama31_8b_edge("v6.1"), _deepseek_r1("v6.1"),
                    _gpt_oss_120b("v6.1")]),
}
DEFAULT_ROUND = "v6.1"


# -- lookups ------------------------------------------------------------------------------------------
def rounds() -> tuple[str, ...]:
    """The rounds known here, oldest first; DEFAULT_ROUND is the newest."""
    return tuple(ROUNDS)


def get_round(name: str | None = None) -> Round:
    name = name or DEFAULT_ROUND
    if name not in ROUNDS:
        raise HarnessError(f"unknown MLPerf round {name!r} (known: {', '.join(ROUNDS)})")
    return ROUNDS[name]


def benchmark(round_name: str | None, name: str) -> Benchmark:
    """One benchmark of one round; an unknown one is an error naming the round's benchmarks."""
    r = get_round(round_name)
    if name not in r.benchmarks:
        elsewhere = [o for o, other in ROUNDS.items() if name in other.benchmarks]
        hint = f"; it is a benchmark of {', '.join(elsewhere)}" if elsewhere else ""
        raise HarnessError(f"{name!r} is not a benchmark of MLPerf {r.name} (known: {', '.join(r.benchmarks)}){hint}")
    return r.benchmarks[name]


def by_model(lg_model_name: str, round_name: str | None = None) -> list[Benchmark]:
    """The round's benchmarks run under one LoadGen model name (llama2-70b: one per level)."""
    base = lg_model_name.removesuffix("-interactive")
    return [b for b in get_round(round_name).benchmarks.values() if b.lg_model_name == base]


def model_names() -> list[str]:
    """Every LoadGen model name of the known rounds' benchmarks."""
    return sorted({b.lg_model_name for r in ROUNDS.values() for b in r.benchmarks.values()})


def loadgen_model_names() -> list[str]:
    """Every model name LoadGen's config is read under: the benchmarks' and their Interactive ones."""
    return sorted({b.loadgen_model(s) for r in ROUNDS.values() for b in r.benchmarks.values()
                   for s in sum(b.required.values(), ()) + sum(b.optional.values(), ())})


def model_targets(lg_model_name: str, round_name: str | None = None) -> ModelTargets:
    """The reference scores a model's accuracy is judged against, as evaluation.py checks them
    (the same at both levels): from the round's first benchmark of that model."""
    found = by_model(lg_model_name, round_name)
    if not found:
        raise HarnessError(f"no benchmark of MLPerf {get_round(round_name).name} runs model {lg_model_name!r} "
                           f"(known: {', '.join(model_names())})")
    b = found[0]
    return ModelTargets(b.lg_model_name, {m.name: m.reference for m in b.metrics},
                        f"MLPerf Inference {b.round} submission checker, {b.name} ({b.dataset.name}, "
                        f"{b.dataset.size} samples)", b.dataset.size)
