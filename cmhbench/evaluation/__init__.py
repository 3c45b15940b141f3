"""Evaluation: Hamming ranking and the contract's metrics, on CUDA when present, else CPU."""

from cmhbench.evaluation.codes import check_codes, hamming_distances, sign_codes
from cmhbench.evaluation.crossmodal import CodeSet, evaluate_code_set
from cmhbench.evaluation.metrics import retrieval_metrics

__all__ = ["CodeSet", "check_codes", "evaluate_code_set", "hamming_distances", "retrieval_metrics", "sign_codes"]
