//! Evaluation of a deep run: geometry, nearest-class-mean and linear-probe accuracy on the test split, and the saved embeddings.

use super::*;

impl Run<'_> {
    pub(super) fn evaluate(
        &self,
        model: &SclModel,
        epoch: usize,
        step: usize,
        lr: f64,
        train_loss: f64,
    ) -> Result<EpochMetrics, RunError> {
        // Eval mode: no autodiff, batch norms on their running statistics.
        let valid = model.valid();
        let inner = self.device.clone().inner();
        let k = self.train.num_classes();
        let train_z = embed_set(&valid, self.train, &self.eval_batcher, &inner)?;
        let geometry =
            geometry_summary(&train_z, self.train.labels(), k, self.minority).map_err(|e| {
                RunError::Geometry {
                    what: format!("geometry at epoch {epoch}"),
                    source: e,
                }
            })?;
        let geometry = crate::defined_geometry(geometry, step)?;
        // The training class means classify the test set (not the test means, which the
        // authors' released code used by mistake).
        let classes: Vec<usize> = (0..k).collect();
        let means =
            scl_geometry::class_means(&train_z, self.train.labels(), &classes).map_err(|e| {
                RunError::Geometry {
                    what: format!("class means at epoch {epoch}"),
                    source: e,
                }
            })?;
        let test_z = embed_set(&valid, self.test, &self.eval_batcher, &inner)?;
        if self.opts.save_embeddings {
            self.save_embeddings(epoch, "train", &train_z, self.train.labels())?;
            self.save_embeddings(epoch, "test", &test_z, self.test.labels())?;
        }
        let (ncc, balanced, per_class) =
            scl_geometry::nearest_class_mean(&test_z, self.test.labels(), &means);
        let probe = if self.cfg.linear_probe {
            Some(
                linear_probe(
                    &train_z,
                    self.train.labels(),
                    &test_z,
                    self.test.labels(),
                    k,
                    &ProbeConfig::default(),
                )
                .map_err(|e| RunError::Geometry {
                    what: format!("linear probe at epoch {epoch}"),
                    source: e,
                })?,
            )
        } else {
            None
        };
        Ok(EpochMetrics {
            epoch,
            step,
            lr,
            train_loss,
            geometry,
            ncc_accuracy: ncc,
            balanced_accuracy: balanced,
            per_class_accuracy: per_class,
            gram: scl_geometry::class_mean_gram(&train_z, self.train.labels(), k).map_err(|e| {
                RunError::Geometry {
                    what: format!("gram at epoch {epoch}"),
                    source: e,
                }
            })?,
            probe,
        })
    }

    /// Writes `embeddings/epoch-NNNN-<split>.npy` and `...-<split>-labels.npy` (atomically,
    /// each).
    pub(super) fn save_embeddings(
        &self,
        epoch: usize,
        split: &str,
        z: &Embeddings,
        labels: &[usize],
    ) -> Result<(), RunError> {
        let dir = self.opts.run_dir.join(EMBEDDINGS_DIR);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let (n, d) = (z.rows(), z.dim());
        // The embeddings came from f32 tensors, so this conversion is exact.
        let values: Vec<f32> = (0..n)
            .flat_map(|i| z.row(i).iter().map(|&v| v as f32))
            .collect();
        let stem = format!("epoch-{epoch:04}-{split}");
        scl_fs::write(
            &dir.join(format!("{stem}.npy")),
            scl_geometry::io::npy_f32(n, d, &values),
        )?;
        let labels: Vec<i64> = labels.iter().map(|&c| c as i64).collect();
        scl_fs::write(
            &dir.join(format!("{stem}-labels.npy")),
            scl_geometry::io::npy_i64(&labels),
        )?;
        Ok(())
    }
}
