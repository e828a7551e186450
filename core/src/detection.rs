//! What the classifier concluded about one record: a score per harm category and one "any
//! harm" score, all in [0, 1]. Scores only: a detection never carries content.

use serde::{Deserialize, Serialize};

use crate::flag::Category;

/// Classifier scores of one record, each a probability in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct HarmScores {
    /// How likely the record is harmful in any category.
    pub any_harm: f32,
    /// One score per category, in [`Category::ALL`] order.
    pub categories: [f32; Category::ALL.len()],
}

impl HarmScores {
    /// The score of `category`.
    pub fn category(&self, category: Category) -> f32 {
        self.categories[category.index()]
    }

    /// The higher of `self` and `other` for each score (a record scored on its prompt and its
    /// completion is as harmful as the worse of the two).
    pub fn max(self, other: Self) -> Self {
        Self {
            any_harm: self.any_harm.max(other.any_harm),
            categories: std::array::from_fn(|i| self.categories[i].max(other.categories[i])),
        }
    }

    /// Categories scoring at least `threshold`, highest first.
    pub fn categories_over(&self, threshold: f32) -> Vec<(Category, f32)> {
        let mut over: Vec<_> = Category::ALL
            .into_iter()
            .map(|c| (c, self.category(c)))
            .filter(|&(_, score)| score >= threshold)
            .collect();
        over.sort_by(|a, b| b.1.total_cmp(&a.1));
        over
    }
}

/// The detection result stored beside a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The classifier's scores.
    pub scores: HarmScores,
    /// Whether `scores.any_harm` reached the model's operating threshold.
    pub harmful: bool,
    /// The model that scored it (name and version).
    pub model: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_over_a_threshold_come_highest_first() {
        let mut scores = HarmScores::default();
        scores.categories[Category::Violence.index()] = 0.7;
        scores.categories[Category::Illegal.index()] = 0.9;
        scores.categories[Category::Hate.index()] = 0.2;
        assert_eq!(
            scores.categories_over(0.5),
            vec![(Category::Illegal, 0.9), (Category::Violence, 0.7)]
        );
        assert_eq!(scores.category(Category::Hate), 0.2);
    }
}
