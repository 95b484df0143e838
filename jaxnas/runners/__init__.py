"""The one search loop (`loop`) and each method's hooks into it (`darts`, `oneshot`,
`train`); shared pieces in `common`. Imported lazily by `jaxnas.search` and `jaxnas.train`."""
