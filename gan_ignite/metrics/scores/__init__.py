"""Scores computed from features: FID, IS, KID, PRDC, FD_inf, CMMD, Vendi, AuthPct, their registry
(factory) and the real-set reference statistics; they may import networks/, never the other way."""
