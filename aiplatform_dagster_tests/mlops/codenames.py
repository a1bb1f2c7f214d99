"""A labelled retrieval task the packaged MiniLM cannot do and a fine-tuned one can.

Each guide has an internal codename that never appears in its text, and every query names a
guide only by its codename. Out of the box neither the embedder nor BM25 can connect the two;
fine-tuning on the train queries teaches the embedder each codename, and the dev queries ask
for the same guides in other words, so the gain is measured on queries the model never saw.
"""

from pathlib import Path

from aiplatform_dagster.evaluation.beir import BeirDoc, write_beir

GUIDES = {
    "zorvak": "restarting the payments service after a database failover",
    "mibelt": "rotating the redis password with the secrets job",
    "quandor": "requesting a new laptop through the hardware form",
    "fespin": "booking a meeting room on the fourth floor",
    "tolvik": "filing travel expenses within thirty days",
    "brenza": "resetting a forgotten vpn token",
    "kaldor": "deploying the search api to staging",
    "nuvessa": "archiving old customer tickets every quarter",
    "pyrrit": "renewing the tls certificates of the gateway",
    "welmo": "onboarding a new engineer in the first week",
    "gastrel": "scaling the gpu node pool for training",
    "hobbrin": "backing up the postgres database nightly",
}
TEMPLATES = (
    "{code} how to",
    "what is {code}",
    "steps for {code}",
    "{code} guide",
    "help with {code}",
)


def guide_documents() -> list[BeirDoc]:
    return [
        BeirDoc(
            f"guide-{code}",
            topic.capitalize(),
            f"This guide explains {topic}. Follow the steps in order and ask the platform "
            "team if anything fails.",
        )
        for code, topic in GUIDES.items()
    ]


def write_codename_benchmark(folder: Path) -> Path:
    """A BEIR folder with a train split: every query judged against its guide."""
    queries, qrels = {}, {}
    for code in GUIDES:
        for number, template in enumerate(TEMPLATES):
            query_id = f"{code}-{number}"
            queries[query_id] = template.format(code=code)
            qrels[query_id] = {f"guide-{code}": 1}
    write_beir(folder, guide_documents(), queries, qrels, split="train")
    return folder


def write_guides(folder: Path) -> Path:
    """The same guides as files, for the platform's own documents folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for document in guide_documents():
        (folder / f"{document.doc_id}.md").write_text(f"# {document.title}\n\n{document.text}\n")
    return folder
