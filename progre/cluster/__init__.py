"""k-means labels (FAISS), label quality, pseudo speakers."""
