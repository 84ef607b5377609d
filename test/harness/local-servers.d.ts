export * from '../../scripts/local-servers';
