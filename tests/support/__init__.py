"""What the tests share: helpers, fakes and the ground truth they check against."""
