from pathlib import Path

from seqtrain import config_doc

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_reference_matches_the_schemas():
    text = README.read_text()
    start, end = text.index(config_doc.START), text.index(config_doc.END) + len(config_doc.END)
    assert text[start:end] == config_doc.render(), "run: python -m seqtrain.config_doc --write README.md"


def test_every_option_is_documented():
    rendered = config_doc.render()
    for key in (
        "`engine.num_epochs`",
        "`batching.batch_size`",
        "`optimizer.momentum`",
        "`lr_control.type`",
        "`seq_ordering`",
        "`n_out`",
        "`unit`",
    ):
        assert key in rendered
    assert "| required |" in rendered  # n_out of linear has no default
