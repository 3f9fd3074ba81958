"""Trading desk: sentiment and technical analysis, risk assessment, position sizing."""
