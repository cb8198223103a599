"""The code sandbox of LiveCodeBench grading: real programs in real namespaces. Each hostile
program must fail its test case, within its limits, and leave nothing behind."""
import os
import socket
import threading
import time
import uuid

import pytest

from accuracy import sandbox

pytestmark = pytest.mark.skipif(not sandbox.available(), reason="namespaces (unshare as root) not allowed here")
LIMITS = sandbox.Limits(cpu_s=1, wall_s=2.0, memory_bytes=512 << 20, processes=16, output_bytes=1 << 20)
CASE = [("3\n", "6")]


def test_right_and_wrong_programs():
    good = "print(int(input()) * 2)"
    assert sandbox.check(good, [("3", "6"), ("5\n", "10\n\n")], LIMITS) == sandbox.CaseResult(True, "ok", b"10\n")
    assert sandbox.check(good, [("3", "6"), ("5", "11")], LIMITS).reason == "wrong answer"
    assert sandbox.check("raise SystemExit(3)", CASE, LIMITS).reason == "exit 3"
    assert sandbox.check("def f(:", CASE, LIMITS).reason == "exit 1"


def test_endless_loop_hits_the_cpu_limit():
    start = time.monotonic()
    result = sandbox.check("while True: pass", CASE, LIMITS)
    assert not result.passed and result.reason in ("signal SIGXCPU", "signal SIGKILL", "time limit")
    assert time.monotonic() - start < LIMITS.wall_s + 2


def test_sleeping_forever_hits_the_wall_limit():
    start = time.monotonic()
    assert sandbox.check("import time\ntime.sleep(60)", CASE, LIMITS).reason == "time limit"
    assert time.monotonic() - start < LIMITS.wall_s + 2


def test_ten_gigabytes_are_refused():
    result = sandbox.check("x = bytearray(10 * 1024 ** 3)\nprint(6)", CASE, LIMITS)
    assert not result.passed and result.reason == "exit 1"


def _processes_of(uid: int) -> int:
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        n += int(status.split("\nUid:")[1].split()[0]) == uid
    return n


def test_fork_bomb_is_capped_and_cleaned_up(monkeypatch):
    uid = sandbox._UID_BASE + 4095  # this test's own uid, so that other sandboxes' processes do not count
    monkeypatch.setattr(sandbox, "_next_uid", lambda: uid)
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    results, during = [], []
    start = time.monotonic()
    worker = threading.Thread(target=lambda: results.append(sandbox.check(bomb, CASE, LIMITS)))
    worker.start()
    time.sleep(1.0)
    during.append(_processes_of(uid))
    worker.join()
    assert not results[0].passed
    assert time.monotonic() - start < LIMITS.wall_s + 2
    assert 1 < during[0] <= LIMITS.processes  # it forked, and no further than the cap
    time.sleep(0.2)
    assert _processes_of(uid) == 0  # and nothing of it survives


def test_writes_outside_its_folder_harm_nothing(tmp_path):
    name = f"sandbox-escape-{uuid.uuid4().hex}"
    code = (f"import os\nopen('/tmp/{name}', 'w').write('x')\nopen('/var/tmp/{name}', 'w').write('x')\n"
            f"open({str(tmp_path / name)!r}, 'w').write('x')\nprint(6)")
    result = sandbox.check(code, CASE, LIMITS)
    assert not result.passed and result.reason == "exit 1"  # PermissionError on the last one
    assert not os.path.exists(f"/tmp/{name}") and not os.path.exists(f"/var/tmp/{name}")
    assert not (tmp_path / name).exists()


def test_big_file_hits_the_file_size_limit():
    result = sandbox.check("open('big', 'wb').write(b'x' * (32 << 20))\nprint(6)", CASE, LIMITS)
    assert not result.passed and result.reason in ("signal SIGXFSZ", "exit 1")


def test_no_network():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.5)
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint(6)"
        result = sandbox.check(code, CASE, LIMITS)
        assert not result.passed and result.reason == "exit 1"
        with pytest.raises(socket.timeout):
            server.accept()


def test_printing_gigabytes_is_cut_at_the_output_cap():
    start = time.monotonic()
    result = sandbox.check("while True: print('x' * 65536)", CASE, LIMITS)
    assert result.reason == "output limit" and len(result.output) == LIMITS.output_bytes
    assert time.monotonic() - start < LIMITS.wall_s + 2


def test_run_all_keeps_order_across_workers():
    programs = [(f"print(int(input()) + {k})", [("1", str(1 + k))]) for k in range(4)]
    programs.append(("print(0)", [("1", "2")]))
    results = sandbox.run_all(programs, LIMITS, workers=2)
    assert [r.passed for r in results] == [True] * 4 + [False]


@pytest.mark.parametrize("got, expected, same", [
    (b"3\n", "3", True), (b"  1 2  \n\n", "1 2\n", True), (b"1.50\n", "1.5", True), (b"1.5 2\n", "1.50 2.0", True),
    (b"50000000000000001\n", "50000000000000000", False), (b"1\n2\n", "1 2", False), (b"yes\n", "Yes", False),
    (b"1 2\n", "1 2 3", False), (b"nan\n", "NaN", False), (b"", "", True)])
def test_output_comparison_is_livecodebench_s(got, expected, same):
    assert sandbox.same_output(got, expected) is same


def test_call_based_cases_call_the_solution_method():
    code = ("class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
            "        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n"
            "                return (seen[target - x], i)\n            seen[x] = i\n")
    cases = [("[2, 7, 11, 15]\n9", "[0, 1]", "twoSum"), ("[3, 3]\n6", "[0, 1]", "twoSum")]
    assert sandbox.check(code, cases, LIMITS).passed  # a tuple counts as the list (List from typing, as LCB)
    assert sandbox.check(code, [("[1, 2]\n3", "[1, 0]", "twoSum")], LIMITS).reason == "wrong answer"
    assert sandbox.check("def double(x):\n    return 2 * x\n", [("21", "42", "double")], LIMITS).passed
    assert not sandbox.check("import os\nos.fork()\n", [("1", "1", "double")], LIMITS).passed
