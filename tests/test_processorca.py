"""processorca.py: filters one by one, equality with a row-by-row reading of the reference,
sampling, file outputs and bad input. A small word-level tokenizer built here keeps these fast;
one slow test runs the demo parquet through the embedded Gemma tokenizer."""
import io
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import processorca as po
from common.errors import HarnessError, exit_on_error
from common.tables import read_table
from inputs import fast_tokenize

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "openorca_demo" / "open_orca_demo.parquet"
WORDS = [f"w{i}" for i in range(40)] + ["INST", "SYS", "[", "]", "<<", ">>", "<</", "[/"]
ORIGINS = ["cot", "flan", "niv", "t0"]


def word_tokenizer(vocab_words=WORDS, chat_template=None):
    """One token per word or punctuation run, BOS added like Llama's; "<s>" in text is the BOS token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for w in vocab_words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, tok):
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return str(path)


def words(n, seed=0):
    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(40)}" for _ in range(n))


def frame(rows):
    """rows: (id, system_prompt, question, output)."""
    return pd.DataFrame(rows, columns=["id", "system_prompt", "question", "output"])


def filtered(df, tok, **kw):
    """Run every filter; return the ids that survive."""
    return set(po.filter_and_tokenize(df, tok, po.OrcaSettings(**kw))["id"])


# ------------------------------------------------------------------ filters, one by one
@pytest.mark.parametrize("char", list("’–“”—"))
@pytest.mark.parametrize("where", ["system_prompt", "question", "output"])
def test_each_allowed_special_character_is_kept(tok, char, where):
    row = {"id": "cot.1", "system_prompt": "w1 w2", "question": "w3 w4", "output": "w5 w6 w7"}
    row[where] += f" {char} "
    assert filtered(frame([tuple(row.values())]), tok) == {"cot.1"}


@pytest.mark.parametrize("char", ["é", "\u00a0", "😀", "’é", "中", "\u2018"])  # ‘ (left quote) is not in the list
@pytest.mark.parametrize("where", ["system_prompt", "question", "output"])
def test_other_non_ascii_is_dropped(tok, char, where):
    row = {"id": "cot.1", "system_prompt": "w1 w2", "question": "w3 w4", "output": "w5 w6 w7"}
    row[where] += char
    assert filtered(frame([tuple(row.values()), ("cot.2", "w1", "w2", "w3 w4 w5")]), tok) == {"cot.2"}


@pytest.mark.parametrize("prompt", po.BAD_SYSTEM_PROMPTS)
def test_bad_system_prompts_drop_niv_and_t0_only(tok, prompt):
    df = frame([(f"{o}.{i}", prompt, "w1 w2", "w3 w4 w5") for i, o in enumerate(ORIGINS)]
               + [(f"{o}.{i + 10}", "w9 w9", "w1 w2", "w3 w4 w5") for i, o in enumerate(ORIGINS)])
    kept = filtered(df, tok)
    assert kept == {"cot.0", "flan.1", "cot.10", "flan.11", "niv.12", "t0.13"}


def test_prompt_that_only_resembles_a_bad_one_is_kept(tok):
    near = po.BAD_SYSTEM_PROMPTS[5] + " "
    assert filtered(frame([("niv.1", near, "w1", "w2 w3"), ("t0.2", near.strip() + ".", "w1", "w2 w3")]),
                    tok) == {"niv.1", "t0.2"}


def test_output_length_exactly_at_and_below_the_limit(tok):
    limit = 20
    # An output of n words is n + 1 tokens (BOS).
    df = frame([("cot.below", "", "w1", words(limit - 2)), ("cot.at", "", "w1", words(limit - 1)),
                ("cot.above", "", "w1", words(limit))])
    assert filtered(df, tok, seqlen_limit=limit) == {"cot.below"}


def test_input_length_exactly_at_and_below_the_limit(tok):
    limit = 40
    df = frame([(f"cot.{k}", "w1", words(k), "w1 w2 w3") for k in range(10, 40)])
    lengths = {i: len(tok(po.LLAMA_PROMPT_SYSTEM.format("w1", q))["input_ids"]) for i, q in zip(df.id, df.question)}
    assert {limit - 1, limit} <= set(lengths.values())
    assert filtered(df, tok, seqlen_limit=limit) == {i for i, n in lengths.items() if n < limit}
    # The appended response token counts towards the input length.
    assert filtered(df, tok, seqlen_limit=limit, response_init_token=2) == {
        i for i, n in lengths.items() if n + 1 < limit}


def test_short_outputs_are_dropped(tok):
    # tokens incl. BOS: "" -> 1, "w1" -> 2, "w1 w2" -> 3
    df = frame([("flan.0", "s", "w1", ""), ("flan.1", "s", "w1", "w1"), ("flan.2", "s", "w1", "w1 w2")])
    assert filtered(df, tok) == {"flan.2"}


def test_prompt_format_and_tokenization_match_the_reference(tok):
    df = frame([("cot.1", "w1 w2", "w3", "w4 w5"), ("flan.2", "", "w6", "w7 w8")])
    full = po.build(df, tok, po.OrcaSettings(num_total_samples=2, calibration_size=1,
                                             response_init_token=29)).full
    assert full.input[0] == "<s>[INST] <<SYS>>\nw1 w2\n<</SYS>>\n\nw3 [/INST]"
    assert full.input[1] == "<s>[INST] w6 [/INST]"
    # Literal "<s>" plus the BOS the tokenizer adds: two BOS ids, as in the reference pickle.
    assert full.tok_input[1] == [1, 1] + tok.convert_tokens_to_ids(["[", "INST", "]", "w6", "[/", "INST", "]"]) + [29]
    assert full.tok_output[1] == [1] + tok.convert_tokens_to_ids(["w7", "w8"])
    assert list(full.columns) == po.COLUMNS
    assert full.tok_input_length.tolist() == [len(t) for t in full.tok_input]


def test_response_init_token_choice(tok):
    assert po.resolve_response_init_token("auto", tok) is None
    assert po.resolve_response_init_token("none", tok) is None
    assert po.resolve_response_init_token("7", tok) == 7
    with pytest.raises(HarnessError, match="outside"):
        po.resolve_response_init_token("100000", tok)
    with pytest.raises(HarnessError, match="auto, none"):
        po.resolve_response_init_token("yes", tok)
    llama_like = [f"t{i}" for i in range(3, po.LLAMA2_VOCAB_SIZE)]
    llama_like[po.LLAMA2_RESPONSE_INIT_TOKEN - 3] = "▁"
    assert po.resolve_response_init_token("auto", word_tokenizer(llama_like)) == 29871


def test_chat_prompt_format(tok):
    template = "{{ bos_token }}{% for m in messages %}<{{ m.role }}> {{ m.content }} {% endfor %}<assistant>"
    chat_tok = word_tokenizer(chat_template=template)
    df = frame([("cot.1", "w1", "w2", "w3 w4"), ("cot.2", "", "w5", "w3 w4")])
    full = po.build(df, chat_tok, po.OrcaSettings(num_total_samples=1, calibration_size=1,
                                                  prompt_format="chat")).full
    assert full.input.tolist() == ["<s><system> w1 <user> w2 <assistant>", "<s><user> w5 <assistant>"]
    assert full.tok_input[1][:2] == [1, 0]  # the template's BOS once, no second one added
    with pytest.raises(HarnessError, match="chat template"):
        po.build(df, tok, po.OrcaSettings(num_total_samples=1, calibration_size=1, prompt_format="chat"))


# ------------------------------------------------------------------ the whole pipeline vs the reference
def reference_pipeline(df, tok, limit, n_total, n_calib, init_token):
    """The reference's steps, row by row and filter after filter, written out plainly."""
    df = df.copy()
    df["input"] = df.apply(lambda r: po.LLAMA_PROMPT_SYSTEM.format(r.system_prompt, r.question)
                           if r.system_prompt else po.LLAMA_PROMPT_NO_SYSTEM.format(r.question), axis=1)
    df["tok_input"] = df["input"].apply(lambda x: tok(x)["input_ids"] + [init_token])
    df["tok_output"] = df["output"].apply(lambda x: tok(x)["input_ids"])
    df["origin"] = df["id"].apply(lambda x: x.split(".")[0])
    english = lambda s: all(c.isascii() or c in "’–“”—" for c in s)  # noqa: E731
    df = df[df["input"].apply(english) & df["output"].apply(english)].reset_index(drop=True)
    df["tok_input_length"] = df["tok_input"].apply(len)
    df["tok_output_length"] = df["tok_output"].apply(len)
    df = df[df.tok_input_length < limit]
    df = df[df.tok_output_length < limit].reset_index(drop=True)
    df = df[df.tok_output_length >= 3].reset_index(drop=True)
    for p in po.BAD_SYSTEM_PROMPTS:
        df = df[~((df.system_prompt == p) & df.origin.isin(["niv", "t0"]))]
    df = df.reset_index(drop=True)
    groups = dict(tuple(df.groupby("origin")))
    parts = [g.reset_index(drop=True).sample(n=n_total // len(groups), random_state=1337) for g in groups.values()]
    sampled = pd.concat(parts).reset_index(drop=True)
    calib = sampled.sample(n=n_calib, random_state=12345).reset_index(drop=True)
    return df, sampled, calib


def random_frame(n=600, seed=3):
    rng = random.Random(seed)
    systems = ["", "w1 w2 w3", "w4 w5"] * 4 + list(po.BAD_SYSTEM_PROMPTS[1:])
    extras = [""] * 12 + ["é", "’", "—"]
    rows = []
    for i in range(n):
        origin = rng.choice(ORIGINS)
        rows.append((f"{origin}.{i}", rng.choice(systems), words(rng.randint(1, 30), i) + rng.choice(extras),
                     words(rng.choice([0, 1, 2, 5, 10, 20, 40, 70]), -i) + rng.choice(extras)))
    return frame(rows)


def test_pipeline_equals_row_by_row_reference(tok):
    df = random_frame()
    ref_full, ref_sampled, ref_calib = reference_pipeline(df, tok, 60, 40, 12, 2)
    ds = po.build(df, tok, po.OrcaSettings(seqlen_limit=60, num_total_samples=40, calibration_size=12,
                                           response_init_token=2))
    for ours, ref in [(ds.full, ref_full), (ds.sampled, ref_sampled), (ds.calibration, ref_calib)]:
        pd.testing.assert_frame_equal(ours, ref[po.COLUMNS], check_dtype=False)
    assert 0 < len(ds.full) < len(df)


def test_sampling_is_deterministic_and_equal_per_origin(tok):
    df = random_frame(seed=5)
    settings = po.OrcaSettings(seqlen_limit=60, num_total_samples=48, calibration_size=10)
    a, b = po.build(df, tok, settings), po.build(df.copy(), tok, settings)
    pd.testing.assert_frame_equal(a.sampled, b.sampled)
    pd.testing.assert_frame_equal(a.calibration, b.calibration)
    assert a.sampled.origin.value_counts().to_dict() == {o: 12 for o in ORIGINS}
    assert a.sampled.origin.tolist() == sorted(a.sampled.origin)  # concatenated in origin order
    assert set(a.calibration.id) <= set(a.sampled.id) and a.calibration.id.is_unique
    assert sum(len(s) for s in a.by_origin.values()) == len(a.full)


def test_sampling_errors(tok):
    df = random_frame(seed=5)
    with pytest.raises(HarnessError, match="multiple of the number of origins"):
        po.build(df, tok, po.OrcaSettings(seqlen_limit=60, num_total_samples=42, calibration_size=1))
    with pytest.raises(HarnessError, match=r"origin '\w+' has \d+ rows after filtering but 1000 are needed"):
        po.build(df, tok, po.OrcaSettings(seqlen_limit=60, num_total_samples=4000, calibration_size=1))
    with pytest.raises(HarnessError, match="calibration subset needs 1000 rows but the sample has only 8"):
        po.build(df, tok, po.OrcaSettings(seqlen_limit=60, num_total_samples=8))


# ------------------------------------------------------------------ command line and files
def run_main(argv, capsys):
    """processorca's CLI in-process: (exit code, stderr lines)."""
    try:
        exit_on_error(lambda: po.main(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def small_parquet(tmp_path_factory):
    df = random_frame(seed=7).rename(columns={"output": "response"})
    path = tmp_path_factory.mktemp("pq") / "orca.parquet"
    df.to_parquet(path)
    return path


def test_cli_writes_reference_files(tok_dir, small_parquet, tmp_path, capsys):
    out = tmp_path / "export" / "nested"
    code, _ = run_main(["--dataset_pq_path", str(small_parquet), "--model_dir", tok_dir, "--seqlen_limit", "60",
                        "--export_dir", str(out), "--num_total_samples", "40", "--calibration_size", "8"], capsys)
    assert code == 0
    stems = [f"open_orca_gpt4_tokenized_llama.{n}" for n in
             ["full", "cot", "flan", "niv", "t0", "sampled_40", "calibration_8"]]
    assert sorted(os.listdir(out)) == sorted([s + ext for s in stems for ext in (".pkl", ".parquet")])
    sampled = pd.read_pickle(out / "open_orca_gpt4_tokenized_llama.sampled_40.pkl")
    assert list(sampled.columns) == po.COLUMNS and len(sampled) == 40
    assert isinstance(sampled.tok_input[0], list) and isinstance(sampled.tok_input[0][0], int)
    niv = pd.read_pickle(out / "open_orca_gpt4_tokenized_llama.niv.pkl")
    assert set(niv.origin) == {"niv"} and list(niv.index) == list(range(len(niv)))
    # The pickles are exactly what the reference writes (DataFrame.to_pickle of the same frames), and
    # each parquet beside one reads back as the same table.
    settings = po.OrcaSettings(seqlen_limit=60, num_total_samples=40, calibration_size=8)
    ds = po.build(po.read_parquet(small_parquet), po.load_tokenizer(tok_dir), settings)
    for name, frame in po.output_files(ds, 40).items():
        expected = io.BytesIO()
        frame.to_pickle(expected)
        assert (out / name).read_bytes() == expected.getvalue(), name
        pd.testing.assert_frame_equal(read_table(out / Path(name).with_suffix(".parquet")), read_table(out / name))


def _write_bad(kind, tmp_path, small_parquet):
    if kind == "missing parquet":
        return tmp_path / "nope.parquet", None
    if kind == "missing column":
        path = tmp_path / "bad.parquet"
        pd.read_parquet(small_parquet).drop(columns=["system_prompt"]).to_parquet(path)
        return path, None
    if kind == "not a parquet":
        path = tmp_path / "bad.parquet"
        path.write_text("id,question\n1,2\n")
        return path, None
    if kind == "missing tokenizer":
        return small_parquet, str(tmp_path / "no-model")
    if kind == "unreadable tokenizer":
        folder = tmp_path / "broken-model"
        folder.mkdir()
        (folder / "tokenizer.json").write_text("{not json")
        (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
        return small_parquet, str(folder)
    if kind == "corrupt gguf":
        path = tmp_path / "model.gguf"
        path.write_bytes(b"GGUF" + bytes(range(256)) * 4)
        return small_parquet, str(path)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing parquet", "missing column", "not a parquet", "missing tokenizer",
                                  "unreadable tokenizer", "corrupt gguf"])
def test_cli_bad_input_one_line_and_no_files(kind, tok_dir, small_parquet, tmp_path, capsys):
    pq_path, model = _write_bad(kind, tmp_path, small_parquet)
    out = tmp_path / "export"
    code, err = run_main(["--dataset_pq_path", str(pq_path), "--model_dir", model or tok_dir, "--export_dir",
                          str(out), "--num_total_samples", "40", "--calibration_size", "8"], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists() or os.listdir(out) == []


def test_cli_sampling_error_leaves_earlier_results(tok_dir, small_parquet, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "open_orca_gpt4_tokenized_llama.full.pkl").write_text("earlier result")
    code, err = run_main(["--dataset_pq_path", str(small_parquet), "--model_dir", tok_dir, "--export_dir", str(out),
                          "--num_total_samples", "40"], capsys)  # default calibration 1000 > 40
    assert code == 2 and len(err) == 1 and "--calibration_subset_size" in err[0]
    assert os.listdir(out) == ["open_orca_gpt4_tokenized_llama.full.pkl"]
    assert (out / "open_orca_gpt4_tokenized_llama.full.pkl").read_text() == "earlier result"


def test_real_cli_exit_code_and_stderr(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "processorca.py"), "--dataset_pq_path",
                           str(tmp_path / "missing.parquet"), "--export_dir", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: dataset parquet not found: {tmp_path / 'missing.parquet'}"]
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the shipped demo, real tokenizer
@pytest.mark.slow
def test_demo_parquet_with_the_embedded_gemma_tokenizer():
    tok = po.load_tokenizer(None)  # what --model_dir defaults to (a GGUF file: no Llama spacing change)
    settings = po.OrcaSettings(num_total_samples=64, calibration_size=16,
                               response_init_token=po.resolve_response_init_token("auto", tok))
    assert settings.response_init_token is None  # 29871 is Llama-2's, not Gemma's
    ds = po.build(po.read_parquet(DEMO), tok, settings)
    assert ds.sampled.origin.value_counts().to_dict() == {o: 16 for o in ORIGINS}
    assert len(ds.calibration) == 16
    demo = pd.read_parquet(DEMO)
    sys.path.insert(0, str(DEMO.parent))
    try:
        import make_demo
    finally:
        sys.path.remove(str(DEMO.parent))
    must_drop = {q for _, _, q, _ in make_demo.DROPPED}
    assert set(demo[~demo.id.isin(ds.full.id)].question) == must_drop
    assert len(ds.full) == len(demo) - len(must_drop)
    assert (ds.full.tok_input_length < 1024).all() and (ds.full.tok_output_length >= 3).all()
    # Ids equal the reference's row-by-row tokenizer calls, also when chunks go to worker processes.
    assert ds.full.tok_input.tolist() == [tok(x)["input_ids"] for x in ds.full.input]
    assert ds.full.tok_output.tolist() == [tok(x)["input_ids"] for x in ds.full.output]
    texts = ds.full.input.tolist() + ds.full.output.tolist()
    in_workers = po.tokenize(texts, tok, processes=2, chunk_size=64, append=7)
    assert in_workers == [tok(x)["input_ids"] + [7] for x in texts]


# ------------------------------------------------------------------ word-by-word encoding of Llama-2-style tokenizers
def _load_speed_benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("processorca_speed", ROOT / "benchmarks" / "processorca_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def llama_like(tmp_path_factory):
    """(slow, fast) Llama-2-like pair as the speed benchmark builds it, from a small SentencePiece BPE
    model trained here (a second or two): byte fallback for characters it never saw, "▁▁" pieces."""
    bench = _load_speed_benchmark()
    rng = random.Random(0)
    words_ = ("the of and to answer question step first total number people water city because however "
              "calculate explain sentence passage summary premise hypothesis").split()
    lines = []
    for _ in range(3000):
        ws = [rng.choice(words_) for _ in range(rng.randint(3, 20))]
        ws[rng.randrange(len(ws))] = str(rng.randrange(10000))
        sep = rng.choice([" "] * 8 + ["  ", " \n", "\n\n", "\t"])
        lines.append(sep.join(ws).capitalize() + rng.choice([".", "?", "!", ", said the café."]))
    model = tmp_path_factory.mktemp("spm") / "llama_like.model"
    bench.train_sentencepiece(model, lines, vocab_size=600)
    return bench.llama2_like_tokenizers(model)


TRICKY_TEXTS = [
    "", " ", "  ", "\n", "a", " a", "a ", "a  b", "a   b ", "  leading and trailing  ", "tab\there", "new\nline",
    "\n\nparagraph\n\n", "line \n next", "digits 0123456789 3.14 1,000", "café 中文 🙂 ’–“”—", "naïve  résumé",
    "x" * 300, "the" * 50 + " the", "a\u2581b", "a\u2581 b", "\u2581 \u2581\u2581 a", " \u2581", "a \u2581",
    "<s>", "</s>", "<unk>", "<s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nquestion [/INST]", "<s>[INST] q [/INST]",
    "a<s>b", "a <s> b", "a  <s>  b", "<s> a", "a </s>", "a</s> b", "a <unk>b", "</s></s> <s><s>", "<s >", "< s>",
    "<<s>>", "s> <s", "x\x00y \x7f z", "Calculate the total number of people, said the café.",
]


def _rust_ids(fast, texts, add_special_tokens=True):
    return [e.ids for e in fast.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]


def _random_texts(n, seed):
    """Texts made of the pieces most likely to break word cutting: spaces, "▁", special-token names and
    their halves, newlines, digits, characters outside the vocabulary."""
    rng = random.Random(seed)
    pieces = [" ", " ", "  ", "a", "the", "answer", "\u2581", "<s>", "</s>", "<unk>", "<", ">", "s", "/", "\n",
              "\t", "7", "é", "中", "🙂", "x" * 40, "."]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(n)]


def _variant(fast, change):
    """A tokenizer object holding a copy of fast's Rust tokenizer with its settings changed."""
    import json
    from types import SimpleNamespace

    from tokenizers import Tokenizer

    spec = json.loads(fast.backend_tokenizer.to_str())
    change(spec)
    return SimpleNamespace(backend_tokenizer=Tokenizer.from_str(json.dumps(spec)))


def _metaspace(scheme, split=False):
    """What transformers 5 builds for a Llama folder: no normalizer, a Metaspace pre-tokenizer."""
    def change(spec):
        spec.update(normalizer=None, pre_tokenizer={"type": "Metaspace", "replacement": "\u2581",
                                                    "prepend_scheme": scheme, "split": split})
    return change


SPACE_FORMS = {"legacy normalizer": lambda spec: None, "metaspace always": _metaspace("always"),
               "metaspace first": _metaspace("first")}


def test_wordwise_encoder_applies_only_where_its_proof_holds(llama_like, tok):
    _, fast = llama_like
    assert fast_tokenize.WordwiseEncoder.for_tokenizer(fast) is not None
    assert fast_tokenize.WordwiseEncoder.for_tokenizer(tok) is None  # word-level model with a pre-tokenizer
    for form in SPACE_FORMS.values():
        assert fast_tokenize.WordwiseEncoder.for_tokenizer(_variant(fast, form)) is not None
    # A piece with "▁" after another character lets a merge cross a cut: refused, and rightly so.
    def crossing(spec):
        spec["model"]["vocab"]["s\u2581"] = len(spec["model"]["vocab"])
        spec["model"]["merges"].insert(0, ["s", "\u2581"])
    crossing_tok = _variant(fast, crossing)
    assert fast_tokenize.WordwiseEncoder.for_tokenizer(crossing_tok) is None
    unchecked = fast_tokenize.WordwiseEncoder(crossing_tok.backend_tokenizer, ["<unk>", "<s>", "</s>"], [1], [])
    assert unchecked.encode(["is a"]) != [crossing_tok.backend_tokenizer.encode("is a").ids]
    assert fast_tokenize.WordwiseEncoder.for_tokenizer(_variant(fast, lambda s: s.update(normalizer=None))) is None
    assert fast_tokenize.WordwiseEncoder.for_tokenizer(_variant(fast, _metaspace("always", split=True))) is None
    assert fast_tokenize.WordwiseEncoder.for_tokenizer(_variant(fast, _metaspace("never"))) is None
    assert fast_tokenize.WordwiseEncoder.for_tokenizer(_variant(fast, lambda s: s["model"].update(dropout=0.1))) is None
    assert fast_tokenize.WordwiseEncoder.for_tokenizer(_variant(fast, lambda s: s["added_tokens"][1].update(lstrip=True))) is None


@pytest.mark.parametrize("add_special_tokens", [True, False])
@pytest.mark.parametrize("form", SPACE_FORMS)
def test_wordwise_ids_equal_the_rust_encoder(llama_like, form, add_special_tokens):
    _, fast = llama_like
    backend = _variant(fast, SPACE_FORMS[form]).backend_tokenizer
    enc = fast_tokenize.WordwiseEncoder.for_tokenizer(SimpleNamespace(backend_tokenizer=backend))
    texts = TRICKY_TEXTS + _random_texts(3000, seed=1)
    # In two calls, so that the second one uses words kept from the first.
    ours = enc.encode(texts[:1000], add_special_tokens) + enc.encode(texts[1000:], add_special_tokens)
    expected = [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]
    assert [t for t, a, b in zip(texts, ours, expected) if a != b] == []
    assert enc.encode([], add_special_tokens) == []


def test_wordwise_ids_equal_the_tokenizer_row_by_row(llama_like):
    """The reference's own call, one text at a time, on the Llama-2-like fast tokenizer as loaded."""
    slow, fast = llama_like
    enc = fast_tokenize.WordwiseEncoder.for_tokenizer(fast)
    texts = TRICKY_TEXTS + _random_texts(300, seed=2)
    assert enc.encode(texts) == [fast(t)["input_ids"] for t in texts]
    assert enc.encode(texts, add_special_tokens=False) == [fast(t, add_special_tokens=False)["input_ids"]
                                                          for t in texts]


def test_wordwise_ids_equal_the_slow_sentencepiece_tokenizer(llama_like):
    slow, fast = llama_like
    texts = ["", "  two  spaces ", "tab\there\n\nnew line", "<s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nq [/INST]",
             "café 中文 🙂 ’–“”—", "digits 0123456789 3.14", "a</s>b<s>c"] + _random_texts(200, seed=2)
    texts = [t for t in texts if "\u2581" not in t]  # the slow tokenizer reads a literal "▁" differently
    assert fast_tokenize.WordwiseEncoder.for_tokenizer(fast).encode(texts) == [slow(t)["input_ids"] for t in texts]


def test_wordwise_ids_with_normalized_added_tokens(llama_like):
    """Added tokens matched after normalization (some converted Llama files say so) cut the same way."""
    _, fast = llama_like

    def normalized(spec):
        for token in spec["added_tokens"]:
            token["normalized"] = True
    backend = _variant(fast, normalized).backend_tokenizer
    enc = fast_tokenize.WordwiseEncoder.for_tokenizer(SimpleNamespace(backend_tokenizer=backend))
    texts = TRICKY_TEXTS + _random_texts(1000, seed=3)
    assert enc.encode(texts) == [e.ids for e in backend.encode_batch_fast(texts)]


def test_wordwise_applies_to_a_llama_folder_loaded_by_transformers(llama_like, tmp_path):
    from inputs.tokenizer import load_tokenizer

    _, fast = llama_like
    fast.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))  # transformers 5 rebuilds it with a Metaspace pre-tokenizer
    texts = TRICKY_TEXTS + _random_texts(300, seed=5)
    assert fast_tokenize.WordwiseEncoder.for_tokenizer(loaded) is not None
    assert po.tokenize(texts, loaded) == [loaded(t)["input_ids"] for t in texts]


def test_tokenize_uses_words_and_matches_row_by_row(llama_like, monkeypatch):
    _, fast = llama_like
    texts = TRICKY_TEXTS + _random_texts(500, seed=4)
    monkeypatch.setattr(fast_tokenize.WordwiseEncoder, "MAX_WORDS", 50)  # the word cache is emptied between chunks
    ids = po.tokenize(texts, fast, append=29871, chunk_size=100)
    assert ids == [fast(t)["input_ids"] + [29871] for t in texts]
    assert fast_tokenize._cached_wordwise_encoder(fast) is fast_tokenize._cached_wordwise_encoder(fast)


# ------------------------------------------------------------------ a Llama folder tokenizes as the reference does
LLAMA_FOLDER_WORDS = ("the of and to answer question step first total number people water city because however "
                      "calculate explain sentence passage summary premise hypothesis assistant helpful").split()


@pytest.fixture(scope="module")
def llama_folder_model(tmp_path_factory):
    """(SentencePiece model file, processor, fast LlamaTokenizer): a small model trained with Llama-2's trainer
    settings on Llama-2 chat prompts, so that "▁[" (Llama-2's 518) is one of its pieces."""
    import sentencepiece as spm

    bench = _load_speed_benchmark()
    rng = random.Random(1)
    lines = []
    for _ in range(3000):
        text = " ".join(rng.choice(LLAMA_FOLDER_WORDS) for _ in range(rng.randint(3, 15))).capitalize() + "."
        system = " ".join(rng.choice(LLAMA_FOLDER_WORDS) for _ in range(rng.randint(0, 6)))
        lines.append(po.LLAMA_PROMPT_SYSTEM.format(system, text) if system else po.LLAMA_PROMPT_NO_SYSTEM.format(text))
    model = tmp_path_factory.mktemp("spm_prompts") / "llama_prompts.model"
    bench.train_sentencepiece(model, lines, vocab_size=600)
    _, fast = bench.llama2_like_tokenizers(model)
    return model, spm.SentencePieceProcessor(model_file=str(model)), fast


def reference_slow_ids(sp, text):
    """What the reference's tokenizer (transformers 4.x, use_fast=False, legacy) gives: BOS, then the raw text cut
    at the special tokens, each piece between them encoded by SentencePiece on its own (dummy prefix "▁")."""
    ids = [sp.bos_id()]
    for piece in re.split("(<unk>|<s>|</s>)", text):
        ids += [sp.piece_to_id(piece)] if piece in ("<unk>", "<s>", "</s>") else sp.encode(piece) if piece else []
    return ids


def llama_folder(path, fast, model_file, legacy, normalized):
    """A Llama-2-style folder: tokenizer.model, tokenizer.json (LlamaConverter's legacy normalizer, as Llama-2's
    own), tokenizer_config.json of class LlamaTokenizer with the special tokens as AddedToken entries and the
    legacy flag given (None: absent)."""
    import json
    import shutil

    path.mkdir()
    fast.backend_tokenizer.save(str(path / "tokenizer.json"))
    shutil.copy(model_file, path / "tokenizer.model")

    def added(content):
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": normalized,
                "rstrip": False, "single_word": False}
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": added("<s>"), "eos_token": added("</s>"),
              "unk_token": added("<unk>"), "clean_up_tokenization_spaces": False, "pad_token": None,
              "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer"}
    if legacy is not None:
        config["legacy"] = legacy
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return str(path)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("legacy", [None, False, True])
def test_llama_folder_tokenizes_like_the_reference(llama_folder_model, tmp_path, legacy, normalized):
    """transformers 5 builds a Llama folder's tokenizer with a Metaspace pre-tokenizer ("first" unless legacy=True),
    which drops the "▁" after "<s>": [1, 1, "[", ...] instead of the reference's [1, 1, "▁[", ...] (Llama-2: 518).
    processorca.load_tokenizer gives it the reference's legacy spacing back, whatever the folder's legacy flag."""
    model_file, sp, fast = llama_folder_model
    tok = po.load_tokenizer(llama_folder(tmp_path / "llama", fast, model_file, legacy, normalized))
    df = frame([("cot.1", "helpful assistant", "Calculate the total number.", "First step answer."),
                ("flan.2", "", "explain  the passage", " the summary </s> hypothesis")])
    full = po.filter_and_tokenize(df, tok, po.OrcaSettings(response_init_token=7))
    assert full.tok_input[0][:3] == [1, 1, sp.piece_to_id("\u2581[")]
    assert sp.piece_to_id("\u2581[") != sp.unk_id()
    assert full.tok_input.tolist() == [reference_slow_ids(sp, t) + [7] for t in full.input]
    assert full.tok_output.tolist() == [reference_slow_ids(sp, t) for t in full.output]
    # Every text, including those that start with a space or have one after a special token.
    texts = TRICKY_TEXTS + _random_texts(500, seed=6)
    assert fast_tokenize.WordwiseEncoder.for_tokenizer(tok) is not None  # the word cache still serves it
    assert po.tokenize(texts, tok) == [reference_slow_ids(sp, t) for t in texts]
    assert [tok(t)["input_ids"] for t in texts[:100]] == [reference_slow_ids(sp, t) for t in texts[:100]]


def test_llama_spacing_leaves_other_tokenizers_alone(llama_folder_model, tok_dir, tmp_path):
    from transformers import LlamaTokenizer

    from inputs.tokenizer import load_tokenizer

    # A word-level tokenizer folder (not Llama): loaded exactly as the harness loads it.
    assert po.load_tokenizer(tok_dir).backend_tokenizer.to_str() == load_tokenizer(tok_dir).backend_tokenizer.to_str()
    # No Hugging Face backend (the GGUF tokenizer, a slow tokenizer): returned as it is.
    gguf_like = SimpleNamespace(name_or_path="model.gguf")
    assert fast_tokenize.reference_llama_spacing(gguf_like) is gguf_like
    # A Llama tokenizer told not to put a "▁" in front (Metaspace "never"), or already in the legacy form.
    _, _, fast = llama_folder_model
    vocab = fast.backend_tokenizer.get_vocab()
    no_prefix = LlamaTokenizer(vocab=vocab, merges=[], add_prefix_space=False)
    before = no_prefix.backend_tokenizer.to_str()
    assert fast_tokenize.reference_llama_spacing(no_prefix).backend_tokenizer.to_str() == before
    before = fast.backend_tokenizer.to_str()
    assert fast_tokenize.reference_llama_spacing(fast).backend_tokenizer.to_str() == before


def test_cli_with_a_llama_folder_writes_the_reference_ids(llama_folder_model, tmp_path, capsys):
    model_file, sp, fast = llama_folder_model
    folder = llama_folder(tmp_path / "llama", fast, model_file, legacy=False, normalized=False)
    rng = random.Random(2)

    def text(n):
        return " ".join(rng.choice(LLAMA_FOLDER_WORDS) for _ in range(n))
    rows = [(f"{ORIGINS[i % 4]}.{i}", rng.choice(["", "helpful assistant"]), text(rng.randint(1, 12)),
             rng.choice(["", " "]) + text(rng.randint(3, 12))) for i in range(40)]
    pq_path = tmp_path / "orca.parquet"
    frame(rows).rename(columns={"output": "response"}).to_parquet(pq_path)
    out = tmp_path / "export"
    code, _ = run_main(["--dataset_pq_path", str(pq_path), "--model_dir", folder, "--export_dir", str(out),
                        "--num_total_samples", "8", "--calibration_size", "2"], capsys)
    assert code == 0
    full = pd.read_pickle(out / "open_orca_gpt4_tokenized_llama.full.pkl")
    assert len(full) > 20 and all(ids[:3] == [1, 1, sp.piece_to_id("\u2581[")] for ids in full.tok_input)
    assert full.tok_input.tolist() == [reference_slow_ids(sp, t) for t in full.input]  # no 29871: not Llama-2's vocab
    assert full.tok_output.tolist() == [reference_slow_ids(sp, t) for t in full.output]
