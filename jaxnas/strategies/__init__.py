"""Search strategies: pure init/step/derive factories (DARTS, SPOS, FairNAS, evolution)."""
