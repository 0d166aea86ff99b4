"""metasft: FOMAML-SFT vs SFT for few-shot math and science reasoning."""
__version__ = "0.1.0"
