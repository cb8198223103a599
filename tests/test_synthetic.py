"""inputs.synthetic: length distributions, determinism, schema, text prompts, command line."""
import numpy as np
import pandas as pd
import pytest

import processorca
from common.errors import HarnessError, exit_on_error
from inputs.synthetic import COLUMNS, LengthSpec, SyntheticSettings, generate, main


def word_tokenizer(n_words=50):
    """A word-level tokenizer (BOS added) built in memory: one id per word."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(n_words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_length_spec_parsing():
    assert LengthSpec.parse("2560") == LengthSpec("fixed", 2560, 2560)
    assert LengthSpec.parse("128-512") == LengthSpec("uniform", 128, 512)
    assert LengthSpec.parse("uniform:1-3") == LengthSpec("uniform", 1, 3)
    assert LengthSpec.parse("normal:1024,256,128,2048") == LengthSpec("normal", 128, 2048, 1024, 256)
    assert LengthSpec.parse("normal:100,10") == LengthSpec("normal", 1, 140, 100, 10)
    for bad in ["", "0", "abc", "512-128", "normal:1", "normal:10,-1", "normal:10,1,5", "-5"]:
        with pytest.raises(HarnessError, match="bad length"):
            LengthSpec.parse(bad)


def test_fixed_lengths_and_schema():
    df = generate(SyntheticSettings(num_samples=20, input_len=LengthSpec.parse("2560"),
                                    output_len=LengthSpec.parse("768"), seed=1))
    assert list(df.columns) == COLUMNS == processorca.COLUMNS
    assert set(df.tok_input_length) == {2560} and set(df.tok_output_length) == {768}
    assert [len(t) for t in df.tok_input] == df.tok_input_length.tolist()
    assert [len(t) for t in df.tok_output] == df.tok_output_length.tolist()
    assert isinstance(df.tok_input[0], list) and df.id.is_unique


def test_uniform_and_normal_lengths_stay_in_bounds():
    n = 4000
    df = generate(SyntheticSettings(num_samples=n, input_len=LengthSpec.parse("10-20"),
                                    output_len=LengthSpec.parse("normal:100,30,60,130"), seed=2))
    assert set(df.tok_input_length) == set(range(10, 21))  # every value of the closed range occurs
    out = df.tok_output_length
    assert out.min() >= 60 and out.max() <= 130
    assert abs(out.mean() - 97) < 3  # truncation at 60/130 pulls the mean of normal(100, 30) a little down
    assert (out == 60).mean() < 0.02 and (out == 130).mean() < 0.02  # redrawn, not clipped into piles
    assert [len(t) for t in df.tok_output] == out.tolist()


def test_random_ids_inside_the_vocab_range_and_seeded():
    settings = SyntheticSettings(num_samples=50, input_len=LengthSpec.parse("64"), output_len=LengthSpec.parse("8"),
                                 vocab_range=(500, 600), seed=7)
    a, b = generate(settings), generate(settings)
    pd.testing.assert_frame_equal(a, b)
    ids = np.concatenate([np.array(t) for t in a.tok_input])
    assert ids.min() >= 500 and ids.max() < 600 and len(set(ids)) > 90
    c = generate(SyntheticSettings(**{**settings.__dict__, "seed": 8}))
    assert c.tok_input.tolist() != a.tok_input.tolist()


def test_random_ids_outside_the_tokenizer_vocab_are_refused():
    with pytest.raises(HarnessError, match="exceeds the tokenizer's vocabulary"):
        generate(SyntheticSettings(num_samples=2, vocab_range=(0, 1000)), word_tokenizer())


def test_text_prompts_are_windows_of_the_text(tmp_path):
    tok = word_tokenizer()
    text = " ".join(f"w{i % 50}" for i in range(300))
    (tmp_path / "t.txt").write_text(text)
    settings = SyntheticSettings(num_samples=30, input_len=LengthSpec.parse("5-40"), output_len=LengthSpec.parse("9"),
                                 prompt_source="text", seed=3)
    df = generate(settings, tok, str(tmp_path / "t.txt"))
    assert [len(t) for t in df.tok_input] == df.tok_input_length.tolist()
    for ids, prompt in zip(df.tok_input, df.input):
        assert ids[0] == tok.bos_token_id
        body = np.array(ids[1:]) - 3  # word wK has id K + 3: consecutive words of the text, wrapping at 50
        assert (np.diff(body) % 50 == 1).all()
        assert prompt == tok.decode(ids, skip_special_tokens=True)
    pd.testing.assert_frame_equal(df, generate(settings, tok, str(tmp_path / "t.txt")))
    with pytest.raises(HarnessError, match="needs a tokenizer"):
        generate(settings)


def _run(argv, capsys):
    try:
        exit_on_error(lambda: main(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


def test_cli_writes_a_pickle_main_py_can_read(tmp_path, capsys):
    out = tmp_path / "sub" / "syn.pkl"
    code, _ = _run(["--output", str(out), "--num-samples", "16", "--input-len", "128", "--output-len", "128",
                    "--seed", "5"], capsys)
    assert code == 0
    df = pd.read_pickle(out)
    assert list(df.columns) == processorca.COLUMNS and len(df) == 16
    assert set(df.tok_input_length) == {128} and set(df.tok_output_length) == {128}
    assert [p.name for p in out.parent.iterdir()] == ["syn.pkl"]  # no temporary file left


@pytest.mark.parametrize("args, message", [
    (["--input-len", "abc"], "bad length 'abc'"),
    (["--vocab-range", "9"], "bad --vocab-range"),
    (["--vocab-range", "10:5"], "need 0 <= LO < HI"),
    (["--num-samples", "0"], "--num-samples must be positive"),
    (["--prompt-source", "text", "--model-path", "/nonexistent/model"], "model path not found"),
])
def test_cli_bad_input(tmp_path, capsys, args, message):
    out = tmp_path / "syn.pkl"
    code, err = _run(["--output", str(out), "--num-samples", "4", "--input-len", "8", "--output-len", "8"] + args,
                     capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []
