"""totem"""
