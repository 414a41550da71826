from .channel_mapper_gn import ChannelMapperGN

__all__ = ['ChannelMapperGN']
