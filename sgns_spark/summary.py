"""What the jobs print for a person at the end of each stage."""

from __future__ import annotations


def print_vocab_summary(report: dict) -> None:
    """Print corpus and vocabulary sizes and the stage's timings."""
    counts, seconds = report["counts"], report["seconds"]
    print(
        f"[vocab] corpus: {counts['corpus_tokens']:,} tokens, {counts['input_bytes']:,} bytes "
        f"({counts['invalid_utf8_bytes']:,} bytes not UTF-8 text)\n"
        f"[vocab] vocabulary: {counts['vocab_size']:,} words covering "
        f"{counts['retained_tokens']:,} tokens\n"
        f"[vocab] seconds: " + ", ".join(f"{step} {value:.1f}" for step, value in seconds.items()),
        flush=True,
    )


def print_train_summary(report: dict) -> None:
    """Print the training totals."""
    counts = report["counts"]
    print(
        f"[train] {counts['rounds']} rounds, {counts['trained_words']:,} words trained at "
        f"{counts['words_per_second']:,.0f} words/s, mean loss {counts['mean_loss']:.4f}, "
        f"driver peak RSS {report['driver_peak_rss_mib']:.0f} MiB",
        flush=True,
    )


def print_scores(scores: dict) -> None:
    """Print evaluation scores and nearest neighbours."""
    if "analogy" in scores:
        analogy = scores["analogy"]
        print(f"[evaluate] analogy accuracy {analogy['accuracy']:.1%} "
              f"({analogy['correct']}/{analogy['covered']}, coverage {analogy['coverage']:.1%})")
    if "similarity" in scores:
        similarity = scores["similarity"]
        print(f"[evaluate] similarity Spearman {similarity['spearman']:.3f} "
              f"(coverage {similarity['coverage']:.1%})")
    for word, neighbours in scores.get("neighbours", {}).items():
        listed = ", ".join(f"{n} {s:.2f}" for n, s in neighbours)
        print(f"[evaluate] {word}: {listed or 'no other word in the vocabulary'}")
    for word in scores.get("neighbour_words_not_in_vocabulary", []):
        print(f"[evaluate] {word}: not in the vocabulary (evaluate.neighbour_words)")
    print(end="", flush=True)


def print_export_summary(report: dict) -> None:
    """Print the published round's scores and where its version is."""
    counts = report["counts"]
    print_scores(counts.get("evaluation", {}))  # export reports of earlier versions hold no scores
    drift = counts.get("drift")
    if drift and "unavailable" in drift:
        print(f"[export] warning: no drift report: {drift['unavailable']}; the version is published without it")
    elif drift:
        print(f"[export] drift from the parent over {drift['shared_words']:,} shared words: mean cosine "
              f"{drift['mean_cosine']:.3f} as published, {drift['mean_cosine_aligned']:.3f} aligned; top-"
              f"{drift['neighbours']} neighbour overlap {drift['neighbour_overlap']:.3f}")
    print(f"[export] published version {counts['version']} ({counts['vocab_size']:,} words x "
          f"{counts['dim']}) at {counts['path']}", flush=True)
