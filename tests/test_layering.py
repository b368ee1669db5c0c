"""How the rooms of the project depend on each other (the issue "one front door"): no module reaches into another
module's private names, the audio work of the command line, the LM toolkit and the recipes goes through the
processor, and code that has one home in the package is not written again elsewhere."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CODE = [p for folder in ("src", "lm", "recipes") for p in (REPO / folder).rglob("*.py")]


def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_no_module_imports_a_private_name_of_another():
    found = []
    for path in CODE:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.relative_to(REPO)}:{node.lineno}: {node.module}.{alias.name}"
                          for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
            elif isinstance(node, ast.Import):
                found += [f"{path.relative_to(REPO)}:{node.lineno}: {alias.name}" for alias in node.names
                          if any(part.startswith("_") and not part.startswith("__") for part in alias.name.split("."))]
    assert found == []


def _imported_names(path: Path):
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            yield from (alias.name for alias in node.names)


def test_the_callers_do_their_audio_work_through_the_processor():
    """The stream-or-batch choice, length grouping, short-audio padding and code padding live in the processor:
    the command line, the LM's continuation and the codec evaluation call its methods, and none of them imports
    the lower-level pieces (window splitting, feature batching) to do it again."""
    lower_level = {"decode_windows", "split_into_windows", "batch_features", "iter_features", "pad_codes"}
    callers = [REPO / "src/semanticodec_hf" / name for name in
               ("cli.py", "cli_codec_commands.py", "cli_runner.py", "cli_audio_io.py", "datasets_utils.py")]
    callers += [REPO / "lm/generate.py", REPO / "recipes/evaluate_codec.py", REPO / "recipes/tokenize_dataset.py"]
    for path in callers:
        assert not lower_level & set(_imported_names(path)), path.name
    for path, uses in [(REPO / "src/semanticodec_hf/cli_codec_commands.py",
                        ("prepare_audio", "encode_prepared", "decode_codes", "decode_stream", "streams_decode")),
                       (REPO / "lm/generate.py", ("decode_codes", "read_audio")),
                       (REPO / "recipes/evaluate_codec.py", ("encode_audio", "decode_codes"))]:
        text = path.read_text()
        assert all(f"{name}(" in text for name in uses), path.name


def test_one_reader_one_code_padding_one_feature_batching():
    """Each of these is defined once in the package (the tokenizer and the feature extractor call them)."""
    definitions = {}
    for path in CODE:
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                definitions.setdefault(node.name, []).append(path.relative_to(REPO).as_posix())
    # cli_audio_io.read_audio only adds the command line's error type around the processor's reader
    assert "src/semanticodec_hf/processing_semanticodec.py" in definitions["read_audio"]
    assert set(definitions["read_audio"]) <= {"src/semanticodec_hf/processing_semanticodec.py",
                                              "src/semanticodec_hf/cli_audio_io.py"}
    assert definitions["pad_codes"] == ["src/semanticodec_hf/processing_semanticodec.py"]
    assert definitions["batch_features"] == ["src/semanticodec_hf/feature_extraction_semanticodec.py"]
    for name in ("clip_features", "encode_features", "_pad_short", "_encode_group", "_read_prompts_audio"):
        assert [p for p in definitions.get(name, []) if p.startswith("src/")] == [], name
