"""Experiments of several training runs, trained and drawn by one command: the degradation
experiment of He et al. (2015), plain networks against their residual twins (degradation.py).
This stage comes after train/ and analysis/ (it trains runs, then reads them as an analysis
would) and before report/, which places an experiment's section; nothing before it imports it."""
