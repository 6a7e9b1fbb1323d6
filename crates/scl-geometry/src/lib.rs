//! Neural-collapse geometry of learned embeddings, with the orthogonal frame (OF) as a target.
//!
//! Supervised contrastive learning with a final ReLU drives the class means towards an
//! *orthogonal frame*: equal norms, pairwise orthogonal (Kini et al., ICLR 2024). Without the
//! ReLU and with balanced classes, the *centred* class means form a simplex equiangular tight
//! frame (ETF) instead. This crate measures both, together with within-class variability
//! (NC1), angles and norm ratios, for all classes and for the majority and minority groups.
//!
//! Everything here is a pure function of an embedding matrix `[n, d]` and its labels, computed
//! in `f64` on the host. A Burn tensor is converted with `Embeddings::from_tensor` (cargo feature `burn`, on by
//! default).
//!
//! # Example
//!
//! ```
//! use scl_geometry::{Embeddings, geometry};
//!
//! // Two classes, two samples each, on orthogonal axes: an exact orthogonal frame.
//! let x = Embeddings::new(4, 2, vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]).unwrap();
//! let labels = [0, 0, 1, 1];
//! let g = geometry(&x, &labels, 2).unwrap();
//! assert!(g.of_distance < 1e-12);
//! assert!(g.mean_cosine.abs() < 1e-12);
//! assert!(g.nc1 < 1e-12);
//! ```
//!
//! # Definitions
//!
//! With `M = [mu_1 .. mu_K]` the (uncentred) class means and `G = M^T M` their Gram matrix:
//!
//! - **OF distance**: `|| G / ||G||_F - I / sqrt(K) ||_F`, in `[0, 2]`; 0 exactly at an OF.
//! - **Centred-ETF distance**: the same after subtracting the unweighted mean of the class
//!   means, compared with `(I - 11^T/K) / ||I - 11^T/K||_F`; 0 exactly at a simplex ETF.
//! - **NC1**: `Tr(S_W S_B^+)` with `S_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T` and
//!   `S_B = (1/K) sum_c (mu_c - mu_G)(mu_c - mu_G)^T`, `mu_G` the unweighted mean of class
//!   means. This is the normalisation of the paper's released code; unlike Papyan et al. it is
//!   *not* divided by `K`. `S_B^+` keeps the `K - 1` leading eigenvalues (as `svds(k=K-1)`
//!   does in the paper's code) and drops any eigenvalue below `1e-12` times the largest, so coinciding class means
//!   do not produce an infinite value.
//! - **Mean cosine**: the mean of `G_ij / sqrt(G_ii G_jj)` over the `K^2 - K` off-diagonal
//!   pairs; 0 at an OF, `-1/(K-1)` at a simplex ETF.
//! - **Norm ratio**: largest over smallest class-mean norm; 1 when the norms are equal.
//!
//! Every metric is invariant to an orthogonal transformation of the embedding space and to
//! a global rescaling of the embeddings.
#![warn(missing_docs)]

pub mod io;
pub mod probe;

#[cfg(feature = "burn")]
use burn::tensor::Tensor;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

/// Why a geometry could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeometryError {
    /// The data buffer does not hold `n * d` values.
    #[error("embedding buffer holds {found} values, expected n * d = {n} * {d} = {}", n * d)]
    BufferSize {
        /// Number of rows.
        n: usize,
        /// Number of columns.
        d: usize,
        /// Length of the buffer that was passed.
        found: usize,
    },
    /// The number of labels differs from the number of embedding rows.
    #[error("{labels} labels for {rows} embedding rows")]
    LabelCount {
        /// Number of labels.
        labels: usize,
        /// Number of embedding rows.
        rows: usize,
    },
    /// A label is not below the number of classes.
    #[error("label {label} at row {row} is outside 0..{num_classes}")]
    LabelOutOfRange {
        /// The offending label.
        label: usize,
        /// Its row.
        row: usize,
        /// The number of classes.
        num_classes: usize,
    },
    /// A requested class has no sample, so it has no mean.
    #[error("class {0} has no sample")]
    EmptyClass(usize),
    /// Fewer than two classes were requested; angles and ETFs need at least two.
    #[error("at least two classes are needed, got {0}")]
    TooFewClasses(usize),
    /// An embedding value is NaN or infinite.
    #[error("embedding value at row {row}, column {col} is not finite")]
    NonFinite {
        /// Row of the value.
        row: usize,
        /// Column of the value.
        col: usize,
    },
    /// Two embedding sets that must share a dimension do not (see [`probe`]).
    #[error("the training embeddings have dimension {train} but the test embeddings {test}")]
    DimensionMismatch {
        /// Dimension of the training embeddings.
        train: usize,
        /// Dimension of the test embeddings.
        test: usize,
    },
    /// A file of embeddings or labels could not be read (see [`io`]).
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong, in one sentence.
        reason: String,
    },
}

/// Accuracy of `predicted` classes against `labels`: `(overall, balanced, per_class)`, where
/// `balanced` is the mean of the per-class accuracies over the classes present in `labels`
/// and a class without examples has a NaN per-class accuracy. Labels not below
/// `num_classes` are ignored.
///
/// ```
/// let (overall, balanced, per) = scl_geometry::accuracies(&[0, 0, 0, 1], [0, 0, 0, 0], 2);
/// assert_eq!((overall, balanced, per), (0.75, 0.5, vec![1.0, 0.0]));
/// ```
pub fn accuracies(
    labels: &[usize],
    predicted: impl IntoIterator<Item = usize>,
    num_classes: usize,
) -> (f64, f64, Vec<f64>) {
    let (mut hit, mut seen) = (vec![0usize; num_classes], vec![0usize; num_classes]);
    for (&y, pred) in labels.iter().zip(predicted) {
        if y < num_classes {
            seen[y] += 1;
            hit[y] += usize::from(pred == y);
        }
    }
    let per: Vec<f64> = (0..num_classes)
        .map(|c| {
            if seen[c] == 0 {
                f64::NAN
            } else {
                hit[c] as f64 / seen[c] as f64
            }
        })
        .collect();
    let present: Vec<f64> = per.iter().copied().filter(|p| p.is_finite()).collect();
    let balanced = present.iter().sum::<f64>() / present.len().max(1) as f64;
    let overall = hit.iter().sum::<usize>() as f64 / seen.iter().sum::<usize>().max(1) as f64;
    (overall, balanced, per)
}

/// Nearest-class-mean classification of the rows of `x` (Euclidean distance to each column
/// of `means.means`; ties go to the first class) scored against `labels`: overall accuracy,
/// balanced accuracy (the mean over the classes present) and the accuracy of each class. The
/// means come from another set, usually the training embeddings, so that the test set is
/// classified by what training learned (not by its own means).
///
/// ```
/// let train = scl_geometry::Embeddings::new(2, 2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
/// let means = scl_geometry::class_means(&train, &[0, 1], &[0, 1]).unwrap();
/// let test = scl_geometry::Embeddings::new(3, 2, vec![0.9, 0.1, 0.2, 0.8, 0.6, 0.4]).unwrap();
/// let (overall, balanced, _) = scl_geometry::nearest_class_mean(&test, &[0, 1, 1], &means);
/// assert_eq!((overall, balanced), (2.0 / 3.0, 0.75));
/// ```
pub fn nearest_class_mean(
    x: &Embeddings,
    labels: &[usize],
    means: &ClassMeans,
) -> (f64, f64, Vec<f64>) {
    let k = means.classes.len();
    let predicted = (0..x.rows()).map(|i| {
        let row = x.row(i);
        let distance = |c: usize| -> f64 {
            row.iter()
                .zip(means.means.column(c).iter())
                .map(|(a, m)| (a - m).powi(2))
                .sum()
        };
        (0..k)
            .map(|c| (c, distance(c)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(c, _)| means.classes[c])
    });
    let num_classes = means.classes.iter().max().map_or(0, |m| m + 1);
    accuracies(labels, predicted, num_classes)
}

/// A host copy of an embedding matrix `[n, d]`, row-major, in `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    n: usize,
    d: usize,
    data: Vec<f64>,
}

impl Embeddings {
    /// Wraps a row-major buffer of `n * d` values.
    ///
    /// # Errors
    /// [`GeometryError::BufferSize`] when `data.len() != n * d`, and
    /// [`GeometryError::NonFinite`] when a value is NaN or infinite.
    pub fn new(n: usize, d: usize, data: Vec<f64>) -> Result<Self, GeometryError> {
        if data.len() != n * d {
            return Err(GeometryError::BufferSize {
                n,
                d,
                found: data.len(),
            });
        }
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            return Err(GeometryError::NonFinite {
                row: pos / d.max(1),
                col: pos % d.max(1),
            });
        }
        Ok(Self { n, d, data })
    }

    /// Copies a Burn tensor `[n, d]` to the host (any float element type; cargo feature
    /// `burn`, on by default).
    #[cfg(feature = "burn")]
    ///
    /// # Errors
    /// [`GeometryError::NonFinite`] when the tensor holds NaN or infinite values.
    pub fn from_tensor(tensor: Tensor<2>) -> Result<Self, GeometryError> {
        let [n, d] = tensor.dims();
        let data = tensor
            .try_into_vec_as::<f64>()
            .expect("a float tensor reads back as f64");
        Self::new(n, d, data)
    }

    /// Number of rows (samples).
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Row `i` as a slice.
    ///
    /// # Panics
    /// When `i >= rows()`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// Applies `f` to every row, in place (for example to normalise or rotate the rows).
    pub fn map_rows(&mut self, mut f: impl FnMut(&mut [f64])) {
        for row in self.data.chunks_mut(self.d.max(1)) {
            f(row);
        }
    }
}

/// The class means of a set of classes, as the columns of a `d x K` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMeans {
    /// The classes, in the order of the columns.
    pub classes: Vec<usize>,
    /// `d x K` matrix whose column `j` is the mean of class `classes[j]`.
    pub means: DMatrix<f64>,
    /// Number of samples of each class, in the order of `classes`.
    pub counts: Vec<usize>,
}

/// Geometry metrics of one group of classes. See the crate documentation for definitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeometryReport {
    /// Number of classes in the group.
    pub num_classes: usize,
    /// `|| G/||G||_F - I/sqrt(K) ||_F` on the uncentred class means.
    pub of_distance: f64,
    /// `|| Gc/||Gc||_F - ETF ||_F` on the centred class means.
    pub etf_distance: f64,
    /// `Tr(S_W S_B^+)`, not divided by `K`.
    pub nc1: f64,
    /// Mean off-diagonal cosine between class means.
    pub mean_cosine: f64,
    /// Largest over smallest class-mean norm.
    pub norm_ratio: f64,
}

/// Geometry of all classes and, where a group holds at least two classes, of the majority
/// and minority groups.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeometrySummary {
    /// All classes.
    pub overall: GeometryReport,
    /// The majority classes only (`None` when fewer than two).
    pub majority: Option<GeometryReport>,
    /// The minority classes only (`None` when fewer than two).
    pub minority: Option<GeometryReport>,
}

fn check_labels(x: &Embeddings, labels: &[usize], num_classes: usize) -> Result<(), GeometryError> {
    if labels.len() != x.n {
        return Err(GeometryError::LabelCount {
            labels: labels.len(),
            rows: x.n,
        });
    }
    if let Some((row, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= num_classes) {
        return Err(GeometryError::LabelOutOfRange {
            label,
            row,
            num_classes,
        });
    }
    Ok(())
}

/// Means of the given classes, over the rows whose label is one of them.
///
/// # Errors
/// [`GeometryError::LabelCount`] when `labels` does not match the rows, and
/// [`GeometryError::EmptyClass`] when a requested class has no sample.
pub fn class_means(
    x: &Embeddings,
    labels: &[usize],
    classes: &[usize],
) -> Result<ClassMeans, GeometryError> {
    if labels.len() != x.n {
        return Err(GeometryError::LabelCount {
            labels: labels.len(),
            rows: x.n,
        });
    }
    let column_of = column_lookup(classes);
    let mut means = DMatrix::<f64>::zeros(x.d, classes.len());
    let mut counts = vec![0usize; classes.len()];
    for (i, &y) in labels.iter().enumerate() {
        if let Some(Some(j)) = column_of.get(y) {
            counts[*j] += 1;
            let mut col = means.column_mut(*j);
            for (m, v) in col.iter_mut().zip(x.row(i)) {
                *m += v;
            }
        }
    }
    for (j, &c) in counts.iter().enumerate() {
        if c == 0 {
            return Err(GeometryError::EmptyClass(classes[j]));
        }
        means.column_mut(j).scale_mut(1.0 / c as f64);
    }
    Ok(ClassMeans {
        classes: classes.to_vec(),
        means,
        counts,
    })
}

fn column_lookup(classes: &[usize]) -> Vec<Option<usize>> {
    let max = classes.iter().copied().max().map_or(0, |m| m + 1);
    let mut column_of = vec![None; max];
    for (j, &c) in classes.iter().enumerate() {
        column_of[c] = Some(j);
    }
    column_of
}

/// The Gram matrix `G = M^T M` of the class means (`K x K`).
pub fn gram(means: &ClassMeans) -> DMatrix<f64> {
    means.means.transpose() * &means.means
}

/// The Gram matrix of the means of the classes `0..num_classes`, as rows (`K` rows of `K`),
/// for records and plots that should not depend on `nalgebra`.
///
/// # Errors
/// See [`class_means`].
pub fn class_mean_gram(
    x: &Embeddings,
    labels: &[usize],
    num_classes: usize,
) -> Result<Vec<Vec<f64>>, GeometryError> {
    check_labels(x, labels, num_classes)?;
    let classes: Vec<usize> = (0..num_classes).collect();
    let g = gram(&class_means(x, labels, &classes)?);
    Ok((0..g.nrows())
        .map(|i| (0..g.ncols()).map(|j| g[(i, j)]).collect())
        .collect())
}

/// Distance of a Gram matrix to the orthogonal frame: `|| G/||G||_F - I/sqrt(K) ||_F`.
///
/// NaN when `G` is zero (all class means at the origin).
pub fn of_distance(gram: &DMatrix<f64>) -> f64 {
    let k = gram.nrows();
    let target = DMatrix::<f64>::identity(k, k) / (k as f64).sqrt();
    (gram / gram.norm() - target).norm()
}

/// Distance of the centred class means to a simplex ETF:
/// `|| Gc/||Gc||_F - (I - 11^T/K)/||I - 11^T/K||_F ||_F`, `Gc` the Gram matrix of the means
/// after subtracting their unweighted average.
pub fn etf_distance(means: &ClassMeans) -> f64 {
    let centred = centred_means(&means.means);
    let gc = centred.transpose() * &centred;
    let k = gc.nrows();
    let etf = simplex_etf_gram(k);
    (&gc / gc.norm() - &etf / etf.norm()).norm()
}

/// `I - 11^T/K`, the Gram matrix of a simplex ETF up to scale.
pub fn simplex_etf_gram(k: usize) -> DMatrix<f64> {
    DMatrix::<f64>::identity(k, k) - DMatrix::<f64>::from_element(k, k, 1.0 / k as f64)
}

fn centred_means(means: &DMatrix<f64>) -> DMatrix<f64> {
    let global = means.column_mean();
    let mut centred = means.clone();
    for mut col in centred.column_iter_mut() {
        col -= &global;
    }
    centred
}

/// Mean off-diagonal cosine between class means, from their Gram matrix.
pub fn mean_cosine(gram: &DMatrix<f64>) -> f64 {
    let k = gram.nrows();
    if k < 2 {
        return f64::NAN;
    }
    let mut total = 0.0;
    for i in 0..k {
        for j in 0..k {
            if i != j {
                total += gram[(i, j)] / (gram[(i, i)] * gram[(j, j)]).sqrt();
            }
        }
    }
    total / (k * k - k) as f64
}

/// Largest over smallest class-mean norm, from the Gram matrix.
pub fn norm_ratio(gram: &DMatrix<f64>) -> f64 {
    let norms = gram.diagonal().map(f64::sqrt);
    norms.max() / norms.min()
}

/// NC1 = `Tr(S_W S_B^+)` over the rows whose label is in `means.classes`.
///
/// With `C` the centred means (`d x K`) and `C^T C = V L V^T` (a `K x K` symmetric
/// eigendecomposition), the eigenvectors of `S_B = C C^T / K` are `u_j = C v_j / sqrt(l_j)`
/// with eigenvalues `l_j / K`, so `Tr(S_W S_B^+) = sum_j (K / l_j) u_j^T S_W u_j`; no `d x d`
/// matrix is formed. (A thin SVD of `C` would do the same, but nalgebra's SVD was measured to
/// lose four digits on some 8 x 3 inputs; the symmetric eigensolver does not.)
pub fn nc1(x: &Embeddings, labels: &[usize], means: &ClassMeans) -> f64 {
    let k = means.classes.len();
    let centred = centred_means(&means.means);
    let eigen = (centred.transpose() * &centred).symmetric_eigen();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    let largest = order.first().map_or(0.0, |&j| eigen.eigenvalues[j]);
    let kept: Vec<usize> = order
        .into_iter()
        .take(k.saturating_sub(1))
        .filter(|&j| largest > 0.0 && eigen.eigenvalues[j] > 1e-12 * largest)
        .collect();
    if kept.is_empty() {
        return f64::NAN;
    }
    let column_of = column_lookup(&means.classes);
    let mut sums = vec![0.0f64; kept.len()];
    let mut n_used = 0usize;
    let mut deviation = nalgebra::DVector::<f64>::zeros(x.d);
    for (i, &y) in labels.iter().enumerate() {
        let Some(Some(j)) = column_of.get(y) else {
            continue;
        };
        n_used += 1;
        for ((dev, h), m) in deviation
            .iter_mut()
            .zip(x.row(i))
            .zip(means.means.column(*j).iter())
        {
            *dev = h - m;
        }
        // a = C^T (h - mu): the deviation against every centred mean.
        let a = centred.tr_mul(&deviation);
        for (s, &dir) in sums.iter_mut().zip(&kept) {
            let proj = a.dot(&eigen.eigenvectors.column(dir)) / eigen.eigenvalues[dir].sqrt();
            *s += proj * proj;
        }
    }
    kept.iter()
        .zip(&sums)
        .map(|(&dir, &s)| (s / n_used as f64) / (eigen.eigenvalues[dir] / k as f64))
        .sum()
}

/// All metrics of one group of classes.
///
/// # Errors
/// See [`GeometryError`]: label problems, an empty class, or fewer than two classes.
pub fn geometry_of_classes(
    x: &Embeddings,
    labels: &[usize],
    classes: &[usize],
) -> Result<GeometryReport, GeometryError> {
    if classes.len() < 2 {
        return Err(GeometryError::TooFewClasses(classes.len()));
    }
    let means = class_means(x, labels, classes)?;
    let g = gram(&means);
    Ok(GeometryReport {
        num_classes: classes.len(),
        of_distance: of_distance(&g),
        etf_distance: etf_distance(&means),
        nc1: nc1(x, labels, &means),
        mean_cosine: mean_cosine(&g),
        norm_ratio: norm_ratio(&g),
    })
}

/// All metrics over the classes `0..num_classes`.
///
/// # Errors
/// See [`GeometryError`].
pub fn geometry(
    x: &Embeddings,
    labels: &[usize],
    num_classes: usize,
) -> Result<GeometryReport, GeometryError> {
    check_labels(x, labels, num_classes)?;
    let classes: Vec<usize> = (0..num_classes).collect();
    geometry_of_classes(x, labels, &classes)
}

/// Metrics over all classes and over the majority and minority groups separately.
///
/// `minority` lists the minority classes; every other class below `num_classes` is majority.
/// A group with fewer than two classes gets `None`.
///
/// # Errors
/// See [`GeometryError`].
pub fn geometry_summary(
    x: &Embeddings,
    labels: &[usize],
    num_classes: usize,
    minority: &[usize],
) -> Result<GeometrySummary, GeometryError> {
    let overall = geometry(x, labels, num_classes)?;
    let (minor, major): (Vec<usize>, Vec<usize>) =
        (0..num_classes).partition(|c| minority.contains(c));
    let group = |classes: &[usize]| -> Result<Option<GeometryReport>, GeometryError> {
        if classes.len() < 2 {
            Ok(None)
        } else {
            geometry_of_classes(x, labels, classes).map(Some)
        }
    };
    Ok(GeometrySummary {
        overall,
        majority: group(&major)?,
        minority: group(&minor)?,
    })
}

#[cfg(test)]
mod tests;
