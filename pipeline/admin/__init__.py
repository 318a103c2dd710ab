"""Operating it: endpoint control, costs and prices, who is signed in."""
