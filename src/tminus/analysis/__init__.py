"""Canary analysis: the sequential tests (:mod:`.sequential`) and the analysis runner with
Argo Rollouts' semantics (:mod:`.runner`). See docs/analysis.md."""
