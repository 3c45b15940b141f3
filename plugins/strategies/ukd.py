"""Strategy ``ukd``: unsupervised knowledge distillation by teacher neighbourhoods.

Paper: Hengtong Hu, Lingxi Xie, Richang Hong, Qi Tian. "Creating Something from Nothing:
Unsupervised Knowledge Distillation for Cross-Modal Hashing." CVPR 2020 (arXiv 2004.00280).
Official code: https://github.com/huhengtong/UKD_CVPR2020, read whole at HEAD a96a9f7 (2020-09); lines
below are at that commit. ``teacher_model/calcu_sim.py`` ranks the neighbours, ``student_model/setting.py``
builds the similarity matrix, ``student_model/student_train.py`` reads it.

What the official code does, and what this strategy does:

- Teacher outputs. The trained teacher's continuous 128-d outputs, ``image_sig`` / ``text_sig`` (the sigmoid
  of its hash layer, ``dis_model_nn.py:67-76``), of the training pairs (``calcu_sim.py:35-52,101-102``).
  Here: ``teacher.encode`` (the continuous outputs before ``sign``).
- Teacher code length. 128 bits whatever the student's length: ``OUTPUT_DIM = 128`` where the teacher is
  trained (``teacher_train.py:14``, also ``pretrain/teacher_pretrain.py:13``) and where its outputs are
  ranked (``calcu_sim.py:17``). Here the field ``teacher_bits = 128``: the runner fits the teacher at that
  length (0: at the student's length, what cmhbench did before).
- Ranking. Euclidean distances among the training pairs, separately in the image and in the text output
  space (``calcu_sim.py:71-75``); item i keeps its ``K`` nearest in each space, itself first
  (``np.argsort(distance[i])[0:K]``, ``:77-79``). Here the same ranking (float64 distances, stable sort,
  ties to the lower index, :func:`cmhbench.neighbours.knn_orders`); every item is its own neighbour.
- Merge. HEAD takes the union of the two lists per row: ``Sim[i][concat(knn_img[i], knn_txt[i])] = 0.999``
  (``setting.py:70-72``; as released that line reads ``teacher_knn_txt`` but ``:61`` loads
  ``teacher_knn_text``, a name slip; the first upload, 310dd31, read the image list alone). Here the union.
  The 0.999 is the value of a similar pair; the ``ssah`` student's squared loss applies that factor, as the
  official ``Sim`` carries it; here ``S_ij`` is 1.
- Orientation. Row i of ``Sim`` is i's own neighbour list, and ``Sim`` is not symmetrised: the student reads
  ``S = Sim[ind].T`` (``student_train.py:195,234``), i.e. for a batch item i the entries ``Sim[i, j]`` over
  all j. Here ``S`` is likewise per row (``symmetrize = False``): entry (i, j) is 1 iff j is among i's K
  nearest in either space; students read it by rows of the batch (``ssah``). ``symmetrize = True`` gives
  ``S = max(S, S^T)``, what this strategy handed over before.
- K. ``K = 10000`` of ``train_size = 18015`` MIRFlickr pairs (``calcu_sim.py:64-65``), the pairs left
  after the 2000 queries (``teacher_model/KNN/read_data.py:90-92``); the paper's sensitivity study
  (its Fig. 3) peaks at 10,000 relevant pairs. The official students then train on the first 15000 of
  those pairs (``student_model/setting.py:45-46,51``), whose rows keep the official lists restricted to
  the 15000: ``(10000 - 1) * 14999 / 18014 + 1 = 8326`` neighbours per list in expectation (the split
  is a random permutation, so a neighbour of i lies in the training part with probability
  14999 / 18014). HEAD's ``setting.py:64`` allocates ``Sim`` as ``num_train x num_train`` with
  ``num_train`` already 15000 (``:53``), so indexing it with the 18015-item lists fails as released.
  Here K is a share of the training pairs, ``k_fraction = 10000 / 18015``: exactly 10,000 on the
  18,015 pairs (``--protocol ukd:train=18015``), 8326 on the 15000 of the ``ukd`` protocol (the
  expected size of the restricted official lists), and the same label-free share on every other
  dataset. NUS-WIDE: the official code ranks MIRFlickr only (``calcu_sim.py`` has no NUS-WIDE
  settings; ``teacher_model/KNN/knn_nus_cross5.py`` builds UGACH's 10-NN graph, not UKD's K) and
  the paper's text with its NUS-WIDE setting could not be retrieved here (only its opening pages
  are stored), so NUS-WIDE takes the same share; ``dataset_defaults`` lists both datasets the
  paper used. ``k`` sets an absolute count instead (``--set ukd.k=10000``). The share is fixed from
  the official code, never tuned on labels; on datasets with few relevant pairs per item (Wiki:
  about 10% of the pairs share a class) it makes ``S`` far denser than the label overlap.

``mode = "sim"`` (not the paper's method, and not its default) hands the student the teacher's graded
cosine similarity, ``S_ij = (1 + cos_ij) / 2`` averaged over the two spaces.

Departures: the K rule above on a training set that is not the 18,015 pairs (and on NUS-WIDE, whose official
K is not known); the forced unit diagonal (officially an item's first neighbour is itself unless another item has
distance exactly 0); ``S_ij = 1`` instead of 0.999 (the ``ssah`` student applies the factor).

What is kept, never the dense n x n float matrix (136 GB at n = 184,477):

- ``knn``: the 0/1 similarity as a bit matrix, n^2 / 8 bytes whatever K, built 64 rows at a time
  (:data:`cmhbench.neighbours.KEY_CHUNK_ROWS`: 94 MB per ``(rows, n)`` float64 array at n = 184,477)
  with the ranking of :func:`~cmhbench.neighbours.knn_mask`; per row (:func:`~cmhbench.neighbours.knn_row_bits`),
  or symmetrised (:func:`~cmhbench.neighbours.knn_union_bits`). Where the per-row bits would take more
  than a quarter of the training features (:func:`keeps_bits`; 4.25 GB at n = 184,477 under the
  ``ucch`` protocol, more than the 3.8 GB of features), the teacher's outputs and each row's k-th
  key and neighbour are kept instead, and blocks are computed on demand
  (:class:`~cmhbench.neighbours.KnnRadiusSimilarity`: the entries of the bits, rows exactly by
  construction, columns as measured there; about 390 MB at that n, for one ``(rows, n, 128)``
  product per space and block read, plus the masks its reads reuse, two bytes per entry of the
  largest block read). The ``cosine`` metric keeps bits: there a column read can
  differ from the bits where normalised outputs tie exactly.
  Per-item neighbour lists would take ``8 n K`` bytes
  (int32, two spaces): 76 GB at the default share of n = 184,477. A dense float copy is kept for
  students only while it is also at most the size of the training features (or 256 MiB:
  :func:`~cmhbench.interfaces.data_relative_cache_bytes`): its blocks are exactly the bits, so
  students read the same values either way (``dadh``'s exact update, up to 8,192 pairs, builds the
  dense ``L = S`` it needs itself).
- ``sim``: the two ``(n, bits)`` unit-normalised output matrices (94 MB at 64 bits); a block is
  ``(1 + (Z_I,rows Z_I,cols^T + Z_T,rows Z_T,cols^T) / 2) / 2``. Where the dense matrix is kept (the
  same data-relative bound; always at n <= 8,192) it is computed in one product, as always; blocks
  computed on demand agree with it to float32 rounding (a matrix product's rounding depends on
  its shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Optional

from cmhbench.config import hp
from cmhbench import interfaces
from cmhbench.hookspecs import hookimpl
from cmhbench.interfaces import Modality, PairedFeatures, RunContext, SimilarityOperator, Supervision, Teacher, check_dense_fits, data_relative_cache_bytes
from cmhbench.lazy import torch
from cmhbench.registry import MethodSpec
from cmhbench.neighbours import knn_row_bits, knn_union_bits, KnnRadiusSimilarity
from cmhbench.training import l2_normalize

if TYPE_CHECKING:
    from torch import Tensor

#: The official share of neighbours per item and space: K = 10000 of the 18015 MIRFlickr training pairs
#: (``teacher_model/calcu_sim.py:64-65``).
K_SHARE = 10000 / 18015

#: The datasets of the paper; both take the official share (NUS-WIDE: no official K found, see the docstring).
DATASET_DEFAULTS = {"mirflickr25k": {"k_fraction": K_SHARE}, "nus-wide-tc10": {"k_fraction": K_SHARE}}


@dataclass(frozen=True)
class UKDConfig:
    """UKD strategy hyperparameters (official values; see the module docstring for the lines)."""

    mode: Literal["knn", "sim"] = hp("knn", "knn: 0/1 union of K-neighbour sets (official); sim: teacher cosine similarity", choices=("knn", "sim"))
    k: int = hp(0, "neighbours per item and space (0: use k_fraction)", ge=0)
    k_fraction: float = hp(K_SHARE, "neighbours per item and space as a share of the training pairs when k = 0 "
                           "(official: 10000 of 18015, calcu_sim.py:64-65)", gt=0, le=1)
    metric: Literal["euclidean", "cosine"] = hp("euclidean", "distance between teacher outputs (official: euclidean, calcu_sim.py:71-72)", choices=("euclidean", "cosine"))
    symmetrize: bool = hp(False, "S = max(S, S^T); official: row i is i's own neighbour list, read by rows (student_train.py:195)")
    teacher_bits: int = hp(128, "code length the teacher is trained at (0: the student's)", ge=0)


def neighbour_count(config: UKDConfig, n: int) -> int:
    """K for ``n`` training pairs: ``config.k`` if set, else ``round(k_fraction * n)``; between 1 and n."""
    k = config.k or max(1, round(config.k_fraction * n))
    return min(k, n)


def keeps_bits(n: int, train: PairedFeatures) -> bool:
    """Whether the per-row kNN similarity of ``n`` pairs is kept as n^2 / 8 bits: while they take at
    most a quarter of the training features (image and text, as held) or 256 MiB
    (:data:`~cmhbench.interfaces.DENSE_FLOOR_BYTES`, n <= 46,340); above, per-row radii
    (:class:`~cmhbench.neighbours.KnnRadiusSimilarity`). Deterministic: never the free memory."""
    return n * n / 8 <= max(interfaces.DENSE_FLOOR_BYTES, interfaces.feature_bytes(train) / 4)


class CosineAgreement(SimilarityOperator):
    """``S_ij = (1 + (cos_I(i, j) + cos_T(i, j)) / 2) / 2`` (clamped to [0, 1]) from the teacher's
    ``(n, bits)`` image and text outputs, kept unit-normalised (``z_image``, ``z_text``)."""

    symmetric = True

    def __init__(self, out_image: Tensor, out_text: Tensor) -> None:
        self.z_image, self.z_text = l2_normalize(out_image.detach()), l2_normalize(out_text.detach())
        self.n = int(out_image.shape[0])

    @property
    def device(self) -> torch.device:
        return self.z_image.device

    @staticmethod
    def _from_cosines(sim: Tensor) -> Tensor:
        return ((sim + 1.0) / 2.0).clamp(0.0, 1.0)

    def block(self, rows: Tensor, cols: Optional[Tensor] = None) -> Tensor:
        """``(len(rows), len(cols) or n)`` float32 entries in [0, 1]."""
        zi, zt = self.z_image, self.z_text
        ci, ct = (zi, zt) if cols is None else (zi[cols], zt[cols])
        return self._from_cosines(0.5 * (zi[rows] @ ci.T + zt[rows] @ ct.T))

    def dense(self) -> Tensor:
        """The whole matrix in one product per modality (what this strategy always handed over)."""
        check_dense_fits(self.n, self.device)
        zi, zt = self.z_image, self.z_text
        return self._from_cosines(0.5 * (zi @ zi.T + zt @ zt.T))


class UKDStrategy:
    """Builds the UKD similarity from a trained teacher's continuous outputs."""

    def __init__(self, config: UKDConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx

    def distill(self, teacher: Optional[Teacher], train: PairedFeatures) -> Supervision:
        """``(n, n)`` similarity over the training pairs from the teacher's outputs."""
        if teacher is None:
            raise ValueError("the ukd strategy needs a teacher")
        out_i = teacher.encode(train.image, Modality.IMAGE).float()
        out_t = teacher.encode(train.text, Modality.TEXT).float()
        n = out_i.shape[0]
        if self.config.mode == "sim":
            supervision = Supervision(CosineAgreement(out_i, out_t), info={"mode": "sim"},
                                      cache_bytes=data_relative_cache_bytes(train))
            supervision.info["mean_similarity"] = supervision.mean()
            return supervision
        k = neighbour_count(self.config, n)
        spaces = [out_i, out_t]
        if self.config.symmetrize:
            similarity = knn_union_bits(spaces, k, self.config.metric)
        elif self.config.metric == "cosine" or keeps_bits(n, train):
            similarity = knn_row_bits(spaces, k, self.config.metric)
        else:
            similarity = KnnRadiusSimilarity(spaces, k, self.config.metric)
        supervision = Supervision(similarity, info={"mode": "knn", "k": k},
                                  cache_bytes=data_relative_cache_bytes(train))
        supervision.info["similar_fraction"] = supervision.mean()
        return supervision


@hookimpl
def cmhbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register the ``ukd`` strategy."""
    register(
        MethodSpec(
            name="ukd",
            kind="strategy",
            build=UKDStrategy,
            config=UKDConfig,
            paper="Hu, Xie, Hong, Tian. Creating Something from Nothing: Unsupervised Knowledge Distillation "
            "for Cross-Modal Hashing. CVPR 2020.",
            code="https://github.com/huhengtong/UKD_CVPR2020",
            dataset_defaults=DATASET_DEFAULTS,
            summary="K nearest neighbours (10000/18015 of the training pairs) of the 128-bit teacher's continuous "
            "outputs in each modality, their union per row as similar pairs",
        )
    )
