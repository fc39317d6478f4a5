"""What the jobs print for a person at the end of each stage."""

from __future__ import annotations


def print_vocab_summary(report: dict) -> None:
    """Print corpus and vocabulary sizes and the stage's timings."""
    counts, seconds = report["counts"], report["seconds"]
    print(
        f"[vocab] corpus: {counts['corpus_tokens']:,} tokens, {counts['input_bytes']:,} bytes "
        f"({counts['invalid_utf8_bytes']:,} invalid UTF-8 bytes replaced)\n"
        f"[vocab] vocabulary: {counts['vocab_size']:,} words covering "
        f"{counts['retained_tokens']:,} tokens\n"
        f"[vocab] seconds: " + ", ".join(f"{step} {value:.1f}" for step, value in seconds.items()),
        flush=True,
    )
