"""compliance.py --test TEST07 / TEST09 (gpt-oss-120b): real grading of a written accuracy log with
the embedded model's tokenizer, thresholds from the shipped audit configs, the official lines."""
import json
from pathlib import Path

import numpy as np
import pytest

import compliance
from inputs.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "reasoning_demo" / "gpt-oss-120b.jsonl"
FINAL = "<|channel|>analysis<|message|>thinking<|end|><|start|>assistant<|channel|>final<|message|>{}<|return|>"


def write_log(path: Path, outputs: list[list[int]]) -> None:
    path.write_text(json.dumps([{"seq_id": n, "qsl_idx": n, "token_count": len(ids),
                                 "data": np.asarray(ids, np.int32).tobytes().hex()} for n, ids in enumerate(outputs)]))


def test_test09_mean_length_against_the_shipped_bounds(tmp_path, capsys):
    log = tmp_path / "mlperf_log_accuracy.json"
    write_log(log, [[5] * 1200, [5] * 1300])  # mean 1250, inside 1150.38-1406.02
    assert compliance.main(["--test", "TEST09", "--accuracy-log", str(log), "--output-dir", str(tmp_path / "a")]) == 0
    text = (tmp_path / "a" / "verify_output_len.txt").read_text()
    assert "Mean output tokens: 1250.00" in text and "TEST PASS" in text
    write_log(log, [[5] * 100, [5] * 200])
    assert compliance.main(["--test", "TEST09", "--accuracy-log", str(log), "--output-dir", str(tmp_path / "b")]) == 1
    assert "TEST FAIL" in (tmp_path / "b" / "verify_output_len.txt").read_text()
    with pytest.raises(SystemExit) as e:  # never over an earlier verification
        compliance.main(["--test", "TEST09", "--accuracy-log", str(log), "--output-dir", str(tmp_path / "b")])
    assert e.value.code == 2 and "exists" in capsys.readouterr().err


def test_test07_grades_by_exact_match_against_the_threshold(tmp_path):
    tok = load_tokenizer(None)
    # the demo's first four rows are multiple choice: gpqa_diamond right and wrong, mmlu_pro right twice;
    # gpqa_diamond's rows count 1/5 each (its repeats): score = (1/5 + 2) / (2/5 + 2)
    answers = ["C", "A", "B", "C"]
    write_log(tmp_path / "log.json", [tok.encode(FINAL.format(a), add_special_tokens=False) for a in answers])
    out = tmp_path / "out"
    rc = compliance.main(["--test", "TEST07", "--accuracy-log", str(tmp_path / "log.json"), "--dataset-file", str(DEMO),
                          "--output-dir", str(out)])
    text = (out / "verify_accuracy.txt").read_text()
    assert f"Accuracy score: {100 * (1 / 5 + 2) / (2 / 5 + 2)}" in text
    assert rc == 0 and "TEST PASS" in text  # 91.7 >= 60.698
    write_log(tmp_path / "log2.json", [tok.encode(FINAL.format("D"), add_special_tokens=False)] * 4)
    assert compliance.main(["--test", "TEST07", "--accuracy-log", str(tmp_path / "log2.json"),
                            "--dataset-file", str(DEMO), "--output-dir", str(tmp_path / "out2")]) == 1
    assert "TEST FAIL" in (tmp_path / "out2" / "verify_accuracy.txt").read_text()


def test_bad_audit_config_is_one_error(tmp_path, capsys):
    conf = tmp_path / "audit.config"
    conf.write_text("*.*.test09_min_output_tokens = lots\n")
    write_log(tmp_path / "log.json", [[1, 2]])
    with pytest.raises(SystemExit) as e:
        compliance.main(["--test", "TEST09", "--accuracy-log", str(tmp_path / "log.json"), "--audit-conf", str(conf)])
    assert e.value.code == 2 and "must be a number" in capsys.readouterr().err


def test_submission_runs_the_compliance_tests_the_registry_names(tmp_path):
    from mlsubmit import layout, registry, runs

    kinds = {name: tuple(k for k in layout.RUN_KINDS if not k.startswith("TEST") or getattr(b, k.lower()))
             for name, b in registry.get_round("v6.1").benchmarks.items()}
    assert kinds["gpt-oss-120b"] == ("performance", "accuracy", "TEST07", "TEST09")
    assert kinds["deepseek-r1"] == ("performance", "accuracy", "TEST06")
    b = registry.benchmark("v6.1", "gpt-oss-120b")
    cmd = runs.compliance_command(tmp_path / "log.json", "Offline", tmp_path, "TEST07", b, "data.pkl", "MODEL")
    assert cmd[cmd.index("--test") + 1] == "TEST07" and cmd[cmd.index("--dataset-file") + 1] == "data.pkl"
    assert runs.audit_conf("TEST09", b).is_file() and runs.audit_conf("TEST07", b).is_file()
    main = runs.main_command(runs.Run("Offline", "TEST09", 4, 4), b, [], tmp_path)
    assert main[main.index("--audit-conf") + 1] == str(runs.audit_conf("TEST09", b))
    assert layout.VERIFY_FILES["TEST09"] == "verify_output_len.txt"


def test_unique_issue_over_a_small_set_logs_each_sample_once(tmp_path):
    """The official TEST07 config on the 10-sample demo set: mlperf.conf's performance_sample_count
    of 6,396 made LoadGen 6.0.17 crash (SIGSEGV) issuing unique samples; main.py lowers it to 10."""
    from helpers import run_main

    p = run_main("--backend", "null", "--dataset-path", str(DEMO), "--lg-model-name", "gpt-oss-120b",
                 "--max-new-tokens", "4", "--audit-conf", str(ROOT / "compliance" / "TEST07" / "gpt-oss-120b" /
                                                              "audit.config"),
                 "--output-log-dir", str(tmp_path / "run"), timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "performance_sample_count 6396 lowered to the data set's 10 samples" in p.stderr
    logged = json.loads((tmp_path / "run" / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in logged) == list(range(10))
    detail = (tmp_path / "run" / "mlperf_log_detail.txt").read_text()
    assert '"effective_performance_issue_unique", "value": true' in detail


def test_check_reads_exact_match_and_the_later_tests_verdicts(tmp_path):
    from mlsubmit import check, registry

    acc = tmp_path / "accuracy.txt"
    acc.write_text("\nResults\n\n{'exact_match': 83.5, 'tokens_per_sample': 1200.0, 'num-samples': 4395}\nhash=ab12\n")
    assert check.accuracy_result(acc) == ({"exact_match": 83.5, "TOKENS_PER_SAMPLE": 1200.0}, True)
    b = registry.benchmark("v6.1", "gpt-oss-120b")
    assert all(m.passes(check.accuracy_result(acc)[0][m.checker]) for m in b.metrics)
    for kind, verdict in (("TEST07", "TEST PASS"), ("TEST09", "TEST FAIL")):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / check.VERIFY_FILES[kind]).write_text(f"...\n{verdict}\n")
    assert check.check_test_pass(tmp_path / "TEST07", "TEST07") == []
    assert check.check_test_pass(tmp_path / "TEST09", "TEST09") == [
        f"{tmp_path / 'TEST09' / 'verify_output_len.txt'}: TEST09 failed (no TEST PASS)"]


def test_submission_runs_test07_and_test09_on_a_demo_set(tmp_path):
    """submission.py on the 10-question gpt-oss-120b demo set (null backend, real LoadGen): the
    preflight says TEST07 and TEST09 cover 10 samples, not their 990 / 6,396; each logs all 10
    once and lands with its verdict."""
    from helpers import tiny_conf
    from test_submission import submission

    tiny_conf(tmp_path / "u.conf", n=10)
    proc = submission("--submitter", "Org", "--system-name", "sys1", "--division", "closed", "--benchmark",
                      "gpt-oss-120b", "--scenarios", "Offline", "--allow-unsubmittable", "--output-dir", "sub", "--",
                      "--backend", "null", "--dataset-path", str(DEMO), "--user-conf", "u.conf", "--max-new-tokens", "8",
                      "--no-progress", "--no-sysmetrics", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for kind, need in (("TEST07", 990), ("TEST09", 6396)):
        assert f"preflight: {kind} logs each of its {need} samples once; the data set has 10" in proc.stderr
    d = tmp_path / "sub/closed/Org/results/sys1/gpt-oss-120b/Offline"
    assert "'exact_match':" in (d / "accuracy/accuracy.txt").read_text()
    for kind, verify in (("TEST07", "verify_accuracy.txt"), ("TEST09", "verify_output_len.txt")):
        assert "TEST FAIL" in (d / kind / verify).read_text()  # the null backend's 8 tokens answer nothing
        logged = json.loads((d / kind / "accuracy" / "mlperf_log_accuracy.json").read_text())
        assert sorted(e["qsl_idx"] for e in logged) == list(range(10))
    assert "Not submittable as it stands" in (d / "README.md").read_text()
    # the checker's check_scenarios: Offline alone is not a closed gpt-oss-120b submission
    assert "preflight: a closed gpt-oss-120b submission needs Server or Interactive besides Offline" in proc.stderr
    check = submission("--check", "sub", cwd=tmp_path)
    assert check.returncode == 1 and "gpt-oss-120b: neither Server nor Interactive (check_scenarios" in check.stdout


def test_reasoning_benchmarks_default_to_their_demo_sets(tmp_path):
    """main.py --lg-model-name deepseek-r1 without --dataset-path runs its shipped demo set (and so
    does submission.py, which asks for the same path)."""
    from helpers import run_main
    from inputs.demo import default_dataset_path
    from mlsubmit import registry

    for name in ("deepseek-r1", "gpt-oss-120b"):
        demo = registry.benchmark("v6.1", name).dataset.demo
        assert default_dataset_path(None, demo=demo) == str(ROOT / demo) and (ROOT / demo).is_file()
    p = run_main("--backend", "null", "--lg-model-name", "deepseek-r1", "--accuracy", "--max-new-tokens", "4",
                 "--output-log-dir", str(tmp_path / "run"), timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(json.loads((tmp_path / "run" / "mlperf_log_accuracy.json").read_text())) == 10


def test_time_estimate_of_a_unique_issue_test_counts_the_samples_there_are():
    from mlsubmit import registry, runs

    b = registry.benchmark("v6.1", "gpt-oss-120b")
    run = runs.Run("Offline", "TEST09", 4, 4)
    assert runs.estimate_s(run, str(ROOT / "user.conf"), b, 10, 2.0)[0] == 5.0       # 10 samples, not 6,396
    assert runs.estimate_s(run, str(ROOT / "user.conf"), b, 6396, 2.0)[0] == 3198.0
